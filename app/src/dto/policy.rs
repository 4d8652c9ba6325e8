//! Data of the policy area, exchanged between its server functions and pages, and the checks
//! both halves run on a policy text (the browser validates as the admin types).

use serde::{Deserialize, Serialize};

/// The policy in force and whether the console may change it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDoc {
    /// The HuJSON text in force; empty when there is no policy (everyone reaches everyone).
    pub text: String,
    /// `false` in file mode: the policy is edited in its file, not here.
    pub editable: bool,
    /// In file mode, the file the server reads (or why there is none).
    pub file: Option<String>,
    /// Set while the policy in force no longer compiles against the tailnet.
    pub problem: Option<String>,
}

/// Why a policy text is refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyIssue {
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

impl std::fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl From<oxiscale_policy::PolicyError> for PolicyIssue {
    fn from(e: oxiscale_policy::PolicyError) -> Self {
        PolicyIssue {
            line: e.line,
            column: e.column,
            message: e.message,
        }
    }
}

/// Parses `text` with the server's own policy code (compiled to WASM in the browser): syntax
/// and every check that does not need the tailnet. An empty text is "no policy" and valid.
pub fn validate(text: &str) -> Result<(), PolicyIssue> {
    if text.trim().is_empty() {
        return Ok(());
    }
    oxiscale_policy::Policy::parse(text)
        .map(|_| ())
        .map_err(PolicyIssue::from)
}

/// The answer to a save.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaveOutcome {
    /// In force now.
    Saved(PolicyDoc),
    /// Refused (does not parse, does not compile against the tailnet, or its `tests` fail);
    /// the policy in force is unchanged.
    Refused(PolicyIssue),
}

/// Someone whose access can be previewed: `key` is `user:<id>` or `node:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub key: String,
    pub label: String,
}

/// One machine the subject can reach, on what, and which rules allow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewRow {
    pub destination: String,
    pub ports: Vec<String>,
    /// Application capabilities (`app` grants) the machine learns the subject has.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Routed prefixes the subject's machines send through this machine (a subnet router
    /// or an exit node; a `via` grant picks it).
    #[serde(default)]
    pub routes: Vec<String>,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub rows: Vec<PreviewRow>,
    /// Shown instead of (or besides) the rows, e.g. "this user has no machines".
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiffTag {
    Same,
    Added,
    Removed,
}

/// One line of a line diff, with its number in the old and in the new text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffLine {
    pub tag: DiffTag,
    pub old: Option<usize>,
    pub new: Option<usize>,
    pub text: String,
}

/// The line diff from `old` to `new`.
pub fn line_diff(old: &str, new: &str) -> Vec<DiffLine> {
    let diff = similar::TextDiff::from_lines(old, new);
    diff.iter_all_changes()
        .map(|c| DiffLine {
            tag: match c.tag() {
                similar::ChangeTag::Equal => DiffTag::Same,
                similar::ChangeTag::Insert => DiffTag::Added,
                similar::ChangeTag::Delete => DiffTag::Removed,
            },
            old: c.old_index().map(|i| i + 1),
            new: c.new_index().map(|i| i + 1),
            text: c.value().trim_end_matches(['\n', '\r']).to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_line_and_column() {
        let bad = "{\n  \"acls\": [\n    {\"action\": \"accept\" \"src\": [\"*\"]}\n  ]\n}";
        let issue = validate(bad).unwrap_err();
        assert_eq!(issue.line, Some(3), "{issue}");
        assert!(issue.column.is_some());
        assert!(validate("").is_ok());
        assert!(validate("{ // comment\n \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]},],\n}").is_ok());
    }

    #[test]
    fn diff_numbers_lines_on_both_sides() {
        let d = line_diff("a\nb\nc\n", "a\nB\nc\n");
        let tags: Vec<_> = d
            .iter()
            .map(|l| (l.tag, l.old, l.new, l.text.as_str()))
            .collect();
        assert_eq!(
            tags,
            vec![
                (DiffTag::Same, Some(1), Some(1), "a"),
                (DiffTag::Removed, Some(2), None, "b"),
                (DiffTag::Added, None, Some(2), "B"),
                (DiffTag::Same, Some(3), Some(3), "c"),
            ]
        );
    }
}
