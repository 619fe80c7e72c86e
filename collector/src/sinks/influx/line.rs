//! InfluxDB line protocol: the exact bytes the sink writes (schema in docs/influxdb.md).
//!
//! `measurement,tag=value,... field=value,... timestamp_ms`, with measurement, tag keys
//! and tag values escaped for commas, spaces and equals signs, string fields quoted, and
//! non-finite numbers left out (line protocol has no NaN).

use std::fmt::Write;

/// Escapes a measurement name: commas and spaces.
fn measurement(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ',' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
}

/// Escapes a tag key, tag value or field key: commas, equals signs and spaces.
fn key(out: &mut String, s: &str) {
    // Names almost never need escaping: they are copied whole. Character by character,
    // this was 11 % of the collector's CPU with the sink on (docs/benchmarks.md).
    if !s
        .bytes()
        .any(|b| matches!(b, b',' | b'=' | b' ' | b'\n' | b'\r' | b'\\'))
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            // A newline would end the line: never valid inside a key.
            '\n' | '\r' => out.push_str("\\ "),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
}

/// A field value.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// A float (written only when finite).
    F(f64),
    /// An integer (`i` suffix).
    I(i64),
    /// A string (quoted).
    S(&'a str),
}

/// One line being built.
pub struct Line<'a> {
    out: &'a mut String,
    start: usize,
    fields: usize,
}

impl<'a> Line<'a> {
    /// Starts a line for `name` at the end of `out`.
    pub fn new(out: &'a mut String, name: &str) -> Self {
        let start = out.len();
        measurement(out, name);
        Line {
            out,
            start,
            fields: 0,
        }
    }

    /// Adds a tag; an empty value is left out (InfluxDB refuses empty tag values).
    /// Tags must be added before fields, in key order for best write performance.
    pub fn tag(self, k: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.out.push(',');
            key(self.out, k);
            self.out.push('=');
            key(self.out, v);
        }
        self
    }

    /// Adds a tag when there is a value.
    pub fn tag_opt(self, k: &str, v: Option<&str>) -> Self {
        match v {
            Some(v) => self.tag(k, v),
            None => self,
        }
    }

    /// Adds a field; a non-finite float is left out.
    pub fn field(mut self, k: &str, v: Field<'_>) -> Self {
        if let Field::F(x) = v {
            if !x.is_finite() {
                return self;
            }
        }
        self.out.push(if self.fields == 0 { ' ' } else { ',' });
        self.fields += 1;
        key(self.out, k);
        self.out.push('=');
        match v {
            Field::F(x) => {
                let _ = write!(self.out, "{x}");
            }
            Field::I(i) => {
                let _ = write!(self.out, "{i}i");
            }
            Field::S(s) => {
                self.out.push('"');
                for c in s.chars() {
                    match c {
                        '"' | '\\' => {
                            self.out.push('\\');
                            self.out.push(c);
                        }
                        '\n' => self.out.push_str("\\n"),
                        _ => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
        }
        self
    }

    /// Adds a float field when there is a value.
    pub fn field_opt(self, k: &str, v: Option<f64>) -> Self {
        match v {
            Some(x) => self.field(k, Field::F(x)),
            None => self,
        }
    }

    /// Ends the line with its timestamp (ms). A line without fields is removed: it would
    /// be refused by the server. Returns whether a line was written.
    pub fn end(self, ts_ms: i64) -> bool {
        if self.fields == 0 {
            self.out.truncate(self.start);
            return false;
        }
        let _ = writeln!(self.out, " {ts_ms}");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_spaces_commas_and_equals_in_tags() {
        let mut s = String::new();
        let wrote = Line::new(&mut s, "dcwatt reading,x")
            .tag("site", "dc 1")
            .tag("metric", "a,b=c")
            .tag("component", "back\\slash")
            .tag("empty", "")
            .field("value", Field::F(1.5))
            .field("note", Field::S("say \"hi\""))
            .field("n", Field::I(-3))
            .end(1_700_000_000_123);
        assert!(wrote);
        assert_eq!(
            s,
            "dcwatt\\ reading\\,x,site=dc\\ 1,metric=a\\,b\\=c,component=back\\\\slash \
             value=1.5,note=\"say \\\"hi\\\"\",n=-3i 1700000000123\n"
        );
    }

    #[test]
    fn floats_are_plain_decimals_and_non_finite_are_left_out() {
        let mut s = String::new();
        Line::new(&mut s, "m")
            .field("big", Field::F(1e21))
            .field("small", Field::F(0.000_001))
            .field("nan", Field::F(f64::NAN))
            .field("whole", Field::F(3.0))
            .end(0);
        assert_eq!(s, "m big=1000000000000000000000,small=0.000001,whole=3 0\n");
    }

    #[test]
    fn a_line_without_fields_is_not_written() {
        let mut s = String::from("keep\n");
        let wrote = Line::new(&mut s, "m")
            .tag("site", "a")
            .field("v", Field::F(f64::INFINITY))
            .end(1);
        assert!(!wrote);
        assert_eq!(s, "keep\n");
    }
}
