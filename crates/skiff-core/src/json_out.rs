//! A small JSON writer for the texts written on every command (the saved document, the
//! AppendEntries exchange, the batch of operations for JS).
//!
//! serde_json escapes every object key and allocates a fresh buffer per value; on those paths
//! that was a fifth of the engine's instructions per command. Here keys are our own field names,
//! quoted at compile time ([`key!`]) and copied, numbers go through `itoa` (serde_json's own
//! integer writer), and text that is already JSON (commands, metadata, nested documents) is
//! copied. What is written must be byte for byte what
//! serde_json writes for the same value: the tests of each writer hold it to the serde form,
//! which stays the reference (and the path for everything written rarely).

use crate::entry::Json;

/// An object key as `Obj` takes it: `key!("term")` is `"term":`, made at compile time so that
/// writing a key is one copy. Only for our own field names, which need no escaping.
#[macro_export]
macro_rules! key {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}

/// One JSON object being written into `out`: `{` at `begin`, `}` at `end`.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn begin(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    /// Writes `key` (`"name":`, from [`key!`]) and leaves `out` to write its value.
    pub fn key(&mut self, key: &'static str) -> &mut String {
        debug_assert!(key.starts_with('"') && key.ends_with("\":"));
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(key);
        self.out
    }

    pub fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        write_u64(self.key(key), value);
        self
    }

    pub fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        write_str(self.key(key), value);
        self
    }

    /// A string of ours that needs no escaping (an op's or a message type's name).
    pub fn name(&mut self, key: &'static str, value: &'static str) -> &mut Self {
        debug_assert!(value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        let out = self.key(key);
        out.push('"');
        out.push_str(value);
        out.push('"');
        self
    }

    /// A string, or `null`.
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => write_str(self.key(key), v),
            None => self.key(key).push_str("null"),
        }
        self
    }

    /// A field whose value is already JSON text.
    pub fn raw(&mut self, key: &'static str, json: &str) -> &mut Self {
        self.key(key).push_str(json);
        self
    }

    pub fn json(&mut self, key: &'static str, value: &Json) -> &mut Self {
        self.raw(key, value.as_str())
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

/// Writes `items` as a JSON array, each with `write`.
pub fn write_array<T>(out: &mut String, items: impl IntoIterator<Item = T>, mut write: impl FnMut(&mut String, T)) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, item);
    }
    out.push(']');
}

/// Writes `value` in decimal, as serde_json does.
pub fn write_u64(out: &mut String, value: u64) {
    // Terms, flags and fresh counters are mostly one digit: one push, no copy.
    if value < 10 {
        out.push(char::from(b'0' + value as u8));
        return;
    }
    out.push_str(itoa::Buffer::new().format(value));
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it. Ids and uuids rarely hold
/// anything to escape: those are copied whole; the rest goes through serde_json.
pub fn write_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_read_as_serde_json_writes_them() {
        for n in [0, 7, 10, 99, 1234567890, u64::MAX] {
            let mut out = String::new();
            write_u64(&mut out, n);
            assert_eq!(out, serde_json::to_string(&n).unwrap());
        }
        for s in ["", "rs1-n1", "a\"b", "back\\slash", "line\nbreak", "\u{1}", "é ✓", "\u{7f}"] {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn an_object_separates_its_fields() {
        let mut out = String::new();
        let mut o = Obj::begin(&mut out);
        o.u64(key!("a"), 1).bool(key!("b"), false).opt_str(key!("c"), None).str(key!("d"), "x").raw(key!("e"), "[1]").name(key!("f"), "send");
        o.end();
        assert_eq!(out, r#"{"a":1,"b":false,"c":null,"d":"x","e":[1],"f":"send"}"#);
        let mut empty = String::new();
        Obj::begin(&mut empty).end();
        write_array(&mut empty, [1u64, 2], write_u64);
        assert_eq!(empty, "{}[1,2]");
    }
}
