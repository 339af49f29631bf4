"""The Streamlit dashboard: ``streamlit run dashboards/wikipulse_dashboard.py``.

It reads PostgreSQL only. :mod:`dashboards.view` turns the filters (kept in the URL's query
string) into time spans, :mod:`dashboards.sql` holds the SQL (bound parameters only),
:mod:`dashboards.queries` runs it and builds the values and DataFrames, with the pure arithmetic
(HyperLogLog, the top-k threshold algorithm) in :mod:`dashboards.algorithms`;
:mod:`dashboards.cache` caches them for the page, :mod:`dashboards.charts` turns DataFrames
into charts, and ``wikipulse_dashboard.py`` lays out the page. Importing this package imports
nothing heavy.
"""
