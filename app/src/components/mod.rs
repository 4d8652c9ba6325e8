pub mod call;
pub mod copy_button;
pub mod layout;
pub mod live;
pub mod machine_actions;
pub mod notice;
pub mod preauth_form;
