//! Printing results: a table or a sentence for people, JSON or YAML for programs.

use serde_json::Value;

use super::Format;

pub struct Output {
    format: Format,
}

impl Output {
    pub fn new(format: Format) -> Self {
        Output { format }
    }

    /// Whether results are printed for people (tables and sentences).
    pub fn is_human(&self) -> bool {
        self.format == Format::Human
    }

    /// Prints a single result; `human` renders it for people.
    pub fn value(&self, v: &Value, human: impl FnOnce(&Value) -> String) {
        match self.format {
            Format::Human => println!("{}", human(v)),
            _ => self.machine(v),
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
        println!(
            "{}",
            line(columns.iter().map(|(h, _)| (*h).to_owned()).collect())
        );
        for r in rows {
            println!("{}", line(r));
        }
    }

    pub fn error(&self, e: &anyhow::Error) {
        match self.format {
            Format::Human => eprintln!("oxiscale: {e:#}"),
            _ => {
                self.machine(&serde_json::json!({ "error": format!("{e:#}") }));
            }
        }
    }

    fn machine(&self, v: &Value) {
        match self.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(v).expect("JSON values print")
            ),
            Format::JsonLine => println!("{v}"),
            Format::Yaml => print!("{}", serde_norway::to_string(v).unwrap_or_default()),
            Format::Human => unreachable!("human output is rendered by the caller"),
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
