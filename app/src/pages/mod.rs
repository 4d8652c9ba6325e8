pub mod machines;
pub mod not_found;
pub mod placeholder;
