//! Printing results: a table or a sentence for people, JSON or YAML for programs.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

use serde::Serialize;
use serde_json::Value;

use super::Format;
use super::headscale_json;
use super::views::Shown;

/// Writes `text` to standard output. A reader that went away (`oxiscale nodes list | head -3`)
/// ends the program quietly and successfully, as a Unix tool does, instead of a panic.
pub fn print_out(text: impl Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = write!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("oxiscale: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// [`print_out`] with a newline.
pub fn print_line(text: impl Display) {
    print_out(format_args!("{text}\n"));
}

pub struct Output {
    format: Format,
}

impl Output {
    pub fn new(format: Format) -> Self {
        Output { format }
    }

    /// Prints a single result; `human` renders it for people.
    pub fn value(&self, v: &Value, human: impl FnOnce(&Value) -> String) {
        match self.format {
            Format::Human => print_line(human(v)),
            _ => self.machine(v),
        }
    }

    /// Prints headscale's message `v` for programs (`headscale_json`), `human()` for people.
    pub fn headscale<T: Serialize + ?Sized>(&self, v: &T, human: impl FnOnce() -> String) {
        match self.format {
            Format::Human => print_line(human()),
            Format::Json => print_line(headscale_json::render(v, true)),
            Format::JsonLine => print_line(headscale_json::render(v, false)),
            Format::Yaml => print_out(serde_norway::to_string(v).unwrap_or_default()),
        }
    }

    /// A single result: headscale's message for programs; for people, `human` of its view.
    pub fn shown<T: Serialize>(&self, s: &Shown<T>, human: impl FnOnce(&Value) -> String) {
        self.headscale(&s.machine, || human(&s.human));
    }

    /// A list: headscale's messages (`null` when none) for programs; for people, a table of
    /// the views with the given (header, field path) columns.
    pub fn shown_table<T: Serialize>(&self, s: &Shown<Vec<T>>, columns: &[(&str, &str)]) {
        if self.format == Format::Human {
            self.table(&s.human, columns);
        } else {
            self.headscale(&headscale_json::list(&s.machine), String::new);
        }
    }

    /// Prints a list as a table with the given (header, field path) columns.
    pub fn table(&self, v: &Value, columns: &[(&str, &str)]) {
        if self.format != Format::Human {
            return self.machine(v);
        }
        let rows: Vec<Vec<String>> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| columns.iter().map(|(_, path)| cell(item, path)).collect())
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([h.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join(" | ")
                .trim_end()
                .to_owned()
        };
        let mut text = line(columns.iter().map(|(h, _)| (*h).to_owned()).collect());
        for r in rows {
            text.push('\n');
            text.push_str(&line(r));
        }
        print_line(text);
    }

    /// Errors go to standard error in every format (a program reading standard output never
    /// mistakes one for a result); under a machine format they are that format.
    pub fn error(&self, e: &anyhow::Error) {
        let error = serde_json::json!({ "error": format!("{e:#}") });
        match self.format {
            Format::Human => eprintln!("oxiscale: {e:#}"),
            Format::Json => eprintln!("{}", headscale_json::render(&error, true)),
            Format::JsonLine => eprintln!("{}", headscale_json::render(&error, false)),
            Format::Yaml => eprint!("{}", self.render(&error)),
        }
    }

    fn machine(&self, v: &Value) {
        print_out(self.render(v));
    }

    fn render(&self, v: &Value) -> String {
        match self.format {
            Format::Json => format!(
                "{}\n",
                serde_json::to_string_pretty(v).expect("JSON values print")
            ),
            Format::JsonLine => format!("{v}\n"),
            Format::Yaml => serde_norway::to_string(v).unwrap_or_default(),
            Format::Human => format!("{v}\n"),
        }
    }
}

fn cell(item: &Value, path: &str) -> String {
    let v = path.split('.').fold(item, |v, key| &v[key]);
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}
