//! Data of the dns area, exchanged between its server functions and pages.
