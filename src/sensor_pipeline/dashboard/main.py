"""Bokeh directory-app entry point: one document per browser session (see document.py)."""

from bokeh.plotting import curdoc

from sensor_pipeline.config import load_settings
from sensor_pipeline.dashboard import document, hub

document.build(curdoc(), hub.shared(), load_settings())
