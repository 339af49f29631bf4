"""The Streamlit dashboard: ``streamlit run dashboards/app.py``.

It reads PostgreSQL only. :mod:`dashboards.view` turns the filters (kept in the URL's query
string) into time spans, :mod:`dashboards.queries` holds the SQL (bound parameters only) and
runs it, :mod:`dashboards.charts` turns DataFrames into charts, and ``app.py`` lays out the
page. Importing this package imports nothing heavy.
"""
