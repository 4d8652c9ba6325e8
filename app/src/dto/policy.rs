//! Data of the policy area, exchanged between its server functions and pages.
