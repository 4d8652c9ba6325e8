//! HuJSON ("human JSON"): JSON plus `//` and `/* */` comments and trailing commas, the format
//! of Tailscale policy files. Parsed by hand so every value keeps its line and column, which
//! lets policy errors point at the offending text.

use crate::PolicyError;

#[derive(Debug, Clone, PartialEq)]
pub struct JVal {
    pub line: u32,
    pub col: u32,
    pub kind: JKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JKind {
    Null,
    Bool(bool),
    /// Kept as written; policies only need integers and strings.
    Num(String),
    Str(String),
    Arr(Vec<JVal>),
    /// Members in document order; duplicate keys are rejected while parsing.
    Obj(Vec<(String, JVal)>),
}

impl JVal {
    pub fn err(&self, msg: impl Into<String>) -> PolicyError {
        PolicyError::at(self.line, self.col, msg)
    }
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            JKind::Null => "null",
            JKind::Bool(_) => "boolean",
            JKind::Num(_) => "number",
            JKind::Str(_) => "string",
            JKind::Arr(_) => "array",
            JKind::Obj(_) => "object",
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            JKind::Str(s) => Some(s),
            _ => None,
        }
    }
    /// Plain JSON, positions dropped.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            JKind::Null => Value::Null,
            JKind::Bool(b) => Value::Bool(*b),
            JKind::Num(n) => serde_json::from_str(n).unwrap_or(Value::Null),
            JKind::Str(s) => Value::String(s.clone()),
            JKind::Arr(a) => Value::Array(a.iter().map(JVal::to_json).collect()),
            JKind::Obj(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

/// Nesting beyond this is refused so hostile input cannot exhaust the stack.
const MAX_DEPTH: u32 = 128;

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
    col: u32,
}

pub fn parse(text: &str) -> Result<JVal, PolicyError> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
        line: 1,
        col: 1,
    };
    p.skip_ws()?;
    let v = p.value(0)?;
    p.skip_ws()?;
    if p.pos < p.src.len() {
        return Err(p.err("unexpected text after the top-level value"));
    }
    Ok(v)
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> PolicyError {
        PolicyError::at(self.line, self.col, msg)
    }
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }
    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if c & 0xC0 != 0x80 {
            // Columns count characters, not UTF-8 continuation bytes.
            self.col += 1;
        }
        Some(c)
    }
    fn skip_ws(&mut self) -> Result<(), PolicyError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => {
                    self.bump();
                }
                Some(b'/') => {
                    let (line, col) = (self.line, self.col);
                    match self.src.get(self.pos + 1) {
                        Some(b'/') => {
                            while let Some(c) = self.peek() {
                                if c == b'\n' {
                                    break;
                                }
                                self.bump();
                            }
                        }
                        Some(b'*') => {
                            self.bump();
                            self.bump();
                            loop {
                                match self.bump() {
                                    None => {
                                        return Err(PolicyError::at(
                                            line,
                                            col,
                                            "unterminated /* comment",
                                        ));
                                    }
                                    Some(b'*') if self.peek() == Some(b'/') => {
                                        self.bump();
                                        break;
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {
                            return Err(
                                self.err("invalid character '/' (comments start with // or /*)")
                            );
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }
    fn value(&mut self, depth: u32) -> Result<JVal, PolicyError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let (line, col) = (self.line, self.col);
        let kind = match self.peek() {
            None => return Err(self.err("unexpected end of input, expected a value")),
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => JKind::Str(self.string()?),
            Some(b't') => self.word("true", JKind::Bool(true))?,
            Some(b'f') => self.word("false", JKind::Bool(false))?,
            Some(b'n') => self.word("null", JKind::Null)?,
            Some(b'-' | b'0'..=b'9') => JKind::Num(self.number()?),
            Some(c) => {
                return Err(self.err(format!(
                    "invalid character {:?} looking for the beginning of a value",
                    c as char
                )));
            }
        };
        Ok(JVal { line, col, kind })
    }
    fn word(&mut self, w: &str, k: JKind) -> Result<JKind, PolicyError> {
        if self.src[self.pos..].starts_with(w.as_bytes()) {
            for _ in 0..w.len() {
                self.bump();
            }
            Ok(k)
        } else {
            Err(self.err(format!("invalid literal, expected {w}")))
        }
    }
    fn number(&mut self) -> Result<String, PolicyError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E') {
                self.bump();
            } else {
                break;
            }
        }
        let s = std::str::from_utf8(&self.src[start..self.pos]).expect("ascii");
        if serde_json::from_str::<serde_json::Number>(s).is_err() {
            return Err(PolicyError::at(
                self.line,
                self.col - s.len() as u32,
                format!("invalid number {s:?}"),
            ));
        }
        Ok(s.to_string())
    }
    fn string(&mut self) -> Result<String, PolicyError> {
        let (line, col) = (self.line, self.col);
        self.bump(); // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.bump() {
                None => return Err(PolicyError::at(line, col, "unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    let c = self
                        .bump()
                        .ok_or_else(|| PolicyError::at(line, col, "unterminated string"))?;
                    match c {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.src[self.pos..].starts_with(b"\\u")
                            {
                                self.bump();
                                self.bump();
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                }
                            }
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => {
                            return Err(
                                self.err(format!("invalid escape '\\{}' in string", c as char))
                            );
                        }
                    }
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(c) => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| PolicyError::at(line, col, "string is not valid UTF-8"))
    }
    fn hex4(&mut self) -> Result<u32, PolicyError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let c = self
                .bump()
                .ok_or_else(|| self.err("truncated \\u escape"))?;
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }
    fn array(&mut self, depth: u32) -> Result<JKind, PolicyError> {
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_ws()?;
            if self.peek() == Some(b']') {
                self.bump();
                return Ok(JKind::Arr(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => {
                    self.bump();
                }
                Some(b']') => {}
                None => return Err(self.err("unexpected end of input in array")),
                Some(c) => {
                    return Err(self.err(format!(
                        "invalid character {:?} after array element, expected ',' or ']'",
                        c as char
                    )));
                }
            }
        }
    }
    fn object(&mut self, depth: u32) -> Result<JKind, PolicyError> {
        self.bump();
        let mut members: Vec<(String, JVal)> = Vec::new();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            self.skip_ws()?;
            match self.peek() {
                Some(b'}') => {
                    self.bump();
                    return Ok(JKind::Obj(members));
                }
                Some(b'"') => {}
                None => return Err(self.err("unexpected end of input in object")),
                Some(c) => {
                    return Err(self.err(format!(
                        "invalid character {:?} looking for an object key",
                        c as char
                    )));
                }
            }
            let (kl, kc) = (self.line, self.col);
            let key = self.string()?;
            // Large objects (thousands of hosts) stay linear.
            if !seen.insert(key.clone()) {
                return Err(PolicyError::at(kl, kc, format!("duplicate key {key:?}")));
            }
            self.skip_ws()?;
            if self.peek() != Some(b':') {
                return Err(self.err(format!("expected ':' after object key {key:?}")));
            }
            self.bump();
            self.skip_ws()?;
            let v = self.value(depth + 1)?;
            members.push((key, v));
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => {
                    self.bump();
                }
                Some(b'}') => {}
                None => return Err(self.err("unexpected end of input in object")),
                Some(c) => {
                    return Err(self.err(format!(
                        "invalid character {:?} after object value, expected ',' or '}}'",
                        c as char
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas() {
        let v = parse("// top\n{\n  \"a\": [1, 2,], /* c */\n  \"b\": \"x\",\n}\n").unwrap();
        assert_eq!(v.to_json(), serde_json::json!({"a": [1, 2], "b": "x"}));
        let JKind::Obj(m) = &v.kind else { panic!() };
        assert_eq!((m[1].1.line, m[1].1.col), (4, 8));
    }

    #[test]
    fn errors_carry_positions() {
        let e = parse("{\n  \"a\": 1\n  \"b\": 2\n}").unwrap_err();
        assert_eq!((e.line, e.column), (Some(3), Some(3)));
        let e = parse("{\"a\": /* open").unwrap_err();
        assert_eq!((e.line, e.column), (Some(1), Some(7)));
        assert!(e.message.contains("unterminated"));
        let e = parse("{\"a\": 1, \"a\": 2}").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
        let e = parse("[1,\n  tru]").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(parse("[,]").is_err());
        assert!(parse("{} x").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
    }
}
