//! Data of the tailnet area, exchanged between its server functions and pages.
