//! Device approval at run time: whether a newly registered node waits for an administrator.
//! The config file's `node.approval_required` is the default; a value saved from the console
//! wins, as DNS settings do.

use tracing::{info, warn};

use super::{Admin, AdminError};
use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::tailnet::{DbOp, TailnetError};

/// Where a saved choice is kept (the settings table).
pub const APPROVAL_SETTING_KEY: &str = "node.approval_required";

/// Whether device approval is on at start: the saved choice if an administrator made one,
/// else the config file's. A saved value that does not read is reported and the file's used.
pub async fn effective_approval_required(
    store: &Store,
    config: &Config,
) -> Result<bool, StoreError> {
    let from_file = config.node.approval_required;
    match store.setting(APPROVAL_SETTING_KEY).await?.as_deref() {
        None => Ok(from_file),
        Some(text) => match parse(text) {
            Some(saved) => {
                if saved != from_file {
                    info!(
                        approval_required = saved,
                        "device approval as saved from the console is in force (it differs from the config file)"
                    );
                }
                Ok(saved)
            }
            None => {
                warn!(
                    saved = text,
                    "the saved device approval setting does not read; using the config file's"
                );
                Ok(from_file)
            }
        },
    }
}

fn parse(text: &str) -> Option<bool> {
    match text {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

impl Admin {
    /// Whether new nodes wait for an administrator now.
    pub fn approval_required(&self) -> bool {
        self.tailnet.read(|s| s.settings.approval_required)
    }

    /// Turns device approval on or off for nodes that register from now on; stored, so it
    /// outlives a restart. Turning it off lets no waiting node in: each is still approved
    /// one by one.
    pub async fn set_approval_required(&self, on: bool) -> Result<bool, AdminError> {
        let before = self.approval_required();
        self.tailnet
            .mutate(move |state, fx| {
                state.settings.approval_required = on;
                fx.write(DbOp::PutSetting(
                    APPROVAL_SETTING_KEY.into(),
                    on.to_string(),
                ));
                Ok::<_, TailnetError>(())
            })
            .await?;
        info!(approval_required = on, "device approval changed");
        self.record(
            "settings.device_approval",
            "device approval",
            Some(serde_json::json!(before)),
            Some(serde_json::json!(on)),
        )
        .await;
        Ok(on)
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn only_the_two_words_read() {
        assert_eq!(parse("true"), Some(true));
        assert_eq!(parse("false"), Some(false));
        assert_eq!(parse("yes"), None);
        assert_eq!(parse(""), None);
    }
}
