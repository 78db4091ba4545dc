//! Located values and the getters that read them: the one place a
//! configuration value is type-checked and range-checked, for the built-in
//! sections and for capabilities alike.
//!
//! After parsing and [interpolation](mod@super::interpolate), every understood
//! value is copied out of `toml`'s span-carrying tree into an owned [`Item`]
//! that keeps its byte span, so an error found now or long after loading names
//! the same `file:line:column` and dotted key.
//!
//! Capabilities read their own configuration through the public views:
//! - [`Section`]: one top-level table a capability declared
//!   ([`RuntimeConfig::section`](super::RuntimeConfig::section)), or a table
//!   nested in it;
//! - [`AgentKeys`]: the `[[agents]]` keys a capability declared as its own,
//!   for one agent ([`AgentConfig::keys`](super::AgentConfig::keys)).
//!
//! Each getter returns `Ok(None)` for a missing key, `Ok(Some(_))` for a good
//! value and a [`ConfigError`] naming the file, line, column and dotted key
//! otherwise, worded exactly like the runtime's own errors.

use std::borrow::Cow;
use std::fmt;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Result, child, line_col};
use crate::topic::{Pattern, PatternSet, SYSTEM_PREFIX, is_system_kind};

/// A value in `toml`'s own tree, borrowing the text, with its span.
pub(super) type Node<'i> = Spanned<DeValue<'i>>;

/// Unknown keys found so far: byte offset (for file order) and the report,
/// e.g. `"event_bus.bufer_size (config/x.toml:3:1)"`.
pub(super) type Unknown = Vec<(usize, String)>;

/// The document being loaded: its name, the directory its relative paths
/// resolve against, and its text (kept to turn spans into line and column
/// only when an error needs them).
#[derive(Default)]
pub(super) struct Doc {
    file: PathBuf,
    base_dir: PathBuf,
    text: Arc<str>,
}

impl fmt::Debug for Doc {
    // The text may carry credentials; the name is enough to tell documents apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doc")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// One understood value, owned and interpolated, with the byte span it was
/// written at.
#[derive(Debug, Clone)]
pub(super) struct Item {
    span: Range<usize>,
    value: Value,
}

/// An [`Item`]'s value; numbers stay as written until a getter reads them, so
/// a bad one is reported where it is used, as `toml` itself would.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    String(String),
    Integer { digits: String, radix: u32 },
    Float(String),
    Boolean(bool),
    Datetime(toml::value::Datetime),
    Array(Vec<Item>),
    Table(Table),
}

/// A table's entries in the order `toml` keeps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Table(Vec<Entry>);

/// One `key = value` of a [`Table`].
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The key as written (unquoted).
    pub(super) key: String,
    /// Byte offset of the key, where unknown-key reports point.
    pub(super) key_at: usize,
    /// The value.
    pub(super) item: Item,
}

// Positions are where a value was written, not part of it: two loads of the
// same settings compare equal whatever the comments and spacing around them.
impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.item == other.item
    }
}

impl Item {
    /// Copies `node` (already interpolated) out of `toml`'s tree.
    pub(super) fn new(node: &Node<'_>) -> Self {
        let value = match node.get_ref() {
            DeValue::String(s) => Value::String(s.to_string()),
            DeValue::Integer(int) => Value::Integer {
                digits: int.as_str().to_owned(),
                radix: int.radix(),
            },
            DeValue::Float(float) => Value::Float(float.as_str().to_owned()),
            DeValue::Boolean(b) => Value::Boolean(*b),
            DeValue::Datetime(d) => Value::Datetime(*d),
            DeValue::Array(items) => Value::Array(items.iter().map(Item::new).collect()),
            DeValue::Table(table) => Value::Table(Table::new(table)),
        };
        Item {
            span: node.span(),
            value,
        }
    }

    /// Byte offset where the value starts.
    pub(super) fn at(&self) -> usize {
        self.span.start
    }

    /// A string the loader supplies (a default it fills in), reported as
    /// written where `at` was.
    pub(super) fn string_at(at: &Item, s: impl Into<String>) -> Self {
        Item {
            span: at.span.clone(),
            value: Value::String(s.into()),
        }
    }

    /// An array of strings the loader supplies, reported where `at` was.
    pub(super) fn strings_at(at: &Item, list: &[String]) -> Self {
        Item {
            span: at.span.clone(),
            value: Value::Array(
                list.iter()
                    .map(|s| Item::string_at(at, s.clone()))
                    .collect(),
            ),
        }
    }

    /// `table` as a table value, reported where `at` was.
    pub(super) fn table_at(at: &Item, table: Table) -> Self {
        Item {
            span: at.span.clone(),
            value: Value::Table(table),
        }
    }

    /// The value of `key` if this is a table holding it.
    pub(super) fn get(&self, key: &str) -> Option<&Item> {
        match &self.value {
            Value::Table(table) => table.get(key),
            _ => None,
        }
    }
}

impl Table {
    /// Copies `table` out of `toml`'s tree.
    pub(super) fn new(table: &DeTable<'_>) -> Self {
        Table(
            table
                .iter()
                .map(|(key, value)| Entry::new(key, value))
                .collect(),
        )
    }

    /// The value of `key`, if present.
    pub(super) fn get(&self, key: &str) -> Option<&Item> {
        self.entry(key).map(|e| &e.item)
    }

    fn entry(&self, key: &str) -> Option<&Entry> {
        self.0.iter().find(|e| e.key == key)
    }

    /// Every entry, in table order.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.0.iter()
    }

    /// Adds an entry at the end.
    pub(super) fn push(&mut self, entry: Entry) {
        self.0.push(entry);
    }

    /// True if the table has no entries.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Table {
    type Item = &'a Entry;
    type IntoIter = std::slice::Iter<'a, Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Entry {
    /// Copies one `key = value` out of `toml`'s tree.
    pub(super) fn new(key: &Spanned<Cow<'_, str>>, value: &Node<'_>) -> Self {
        Entry {
            key: key.get_ref().to_string(),
            key_at: key.span().start,
            item: Item::new(value),
        }
    }
}

fn a_type(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer { .. } => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

impl Doc {
    pub(super) fn new(text: &str, file: &Path, base_dir: &Path) -> Self {
        Doc {
            file: file.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            text: text.into(),
        }
    }

    /// `file:line:column` of byte `offset`.
    pub(super) fn location(&self, offset: usize) -> String {
        let (line, column) = line_col(&self.text, offset);
        format!("{}:{line}:{column}", self.file.display())
    }

    /// An error at byte `offset`, about `key` if given.
    pub(super) fn error(
        &self,
        offset: usize,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_col(&self.text, offset);
        ConfigError::Invalid {
            file: self.file.clone(),
            line,
            column,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    pub(super) fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        self.error(e.span().map_or(0, |s| s.start), None, e.message())
    }

    pub(super) fn invalid(
        &self,
        item: &Item,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error(item.at(), Some(key), message)
    }

    /// The report for an unknown key, with its offset for sorting.
    pub(super) fn unknown(&self, entry: &Entry, path: String) -> (usize, String) {
        (
            entry.key_at,
            format!("{path} ({})", self.location(entry.key_at)),
        )
    }

    pub(super) fn type_error(&self, item: &Item, key: &str, expected: &str) -> ConfigError {
        self.invalid(
            item,
            key,
            format!("expected {expected}, found {}", a_type(&item.value)),
        )
    }

    pub(super) fn table<'n>(&self, item: &'n Item, key: &str) -> Result<&'n Table> {
        match &item.value {
            Value::Table(table) => Ok(table),
            _ => Err(self.type_error(item, key, "a table")),
        }
    }

    /// The items of an array; `expected` names what it should hold.
    pub(super) fn array<'n>(
        &self,
        item: &'n Item,
        key: &str,
        expected: &str,
    ) -> Result<&'n [Item]> {
        match &item.value {
            Value::Array(items) => Ok(items),
            _ => Err(self.type_error(item, key, expected)),
        }
    }

    pub(super) fn str<'n>(&self, item: &'n Item, key: &str) -> Result<&'n str> {
        match &item.value {
            Value::String(s) => Ok(s),
            _ => Err(self.type_error(item, key, "a string")),
        }
    }

    /// A non-empty path, as written.
    pub(super) fn path(&self, item: &Item, key: &str) -> Result<PathBuf> {
        let s = self.str(item, key)?;
        if s.is_empty() {
            return Err(self.invalid(item, key, "path must not be empty"));
        }
        Ok(PathBuf::from(s))
    }

    /// A non-empty path, relative ones resolved against the config file's directory.
    pub(super) fn resolved_path(&self, item: &Item, key: &str) -> Result<PathBuf> {
        Ok(self.base_dir.join(self.path(item, key)?))
    }

    /// A path relative to the config file's directory, as a string: how
    /// `trusted_keys` entries that are not inline keys are kept.
    pub(super) fn resolve_str(&self, s: &str) -> String {
        self.base_dir.join(s).display().to_string()
    }

    fn int(&self, item: &Item, key: &str) -> Result<i64> {
        let Value::Integer { digits, radix } = &item.value else {
            return Err(self.type_error(item, key, "an integer"));
        };
        i64::from_str_radix(digits, *radix)
            .map_err(|_| self.invalid(item, key, "integer out of range"))
    }

    /// An integer in `lo..=hi`.
    pub(super) fn uint(&self, item: &Item, key: &str, lo: u64, hi: u64) -> Result<u64> {
        let n = self.int(item, key)?;
        match u64::try_from(n) {
            Ok(v) if (lo..=hi).contains(&v) => Ok(v),
            _ if hi >= i64::MAX as u64 => {
                Err(self.invalid(item, key, format!("must be at least {lo}, got {n}")))
            }
            _ => Err(self.invalid(item, key, format!("must be between {lo} and {hi}, got {n}"))),
        }
    }

    pub(super) fn u32(&self, item: &Item, key: &str, lo: u32) -> Result<u32> {
        let v = self.uint(item, key, lo.into(), u32::MAX.into())?;
        Ok(u32::try_from(v).unwrap_or(u32::MAX))
    }

    pub(super) fn usize(&self, item: &Item, key: &str, lo: usize, hi: usize) -> Result<usize> {
        let hi = u64::try_from(hi).unwrap_or(u64::MAX);
        let v = self.uint(item, key, lo as u64, hi)?;
        Ok(usize::try_from(v).unwrap_or(usize::MAX))
    }

    pub(super) fn bool(&self, item: &Item, key: &str) -> Result<bool> {
        match item.value {
            Value::Boolean(b) => Ok(b),
            _ => Err(self.type_error(item, key, "a boolean")),
        }
    }

    /// A humantime string (`"5s"`, `"250ms"`) of at least `min`.
    pub(super) fn duration(&self, item: &Item, key: &str, min: Duration) -> Result<Duration> {
        let s = self.str(item, key)?;
        let d = humantime::parse_duration(s).map_err(|e| {
            self.invalid(
                item,
                key,
                format!("invalid duration {s:?}: {e} (write e.g. \"5s\" or \"250ms\")"),
            )
        })?;
        if d < min {
            return Err(self.invalid(
                item,
                key,
                format!(
                    "must be at least {}, got {s:?}",
                    humantime::format_duration(min)
                ),
            ));
        }
        Ok(d)
    }

    pub(super) fn strings(&self, item: &Item, key: &str) -> Result<Vec<String>> {
        self.array(item, key, "an array of strings")?
            .iter()
            .map(|item| self.str(item, key).map(str::to_owned))
            .collect()
    }

    /// An array of topic patterns; with `publish`, patterns granting
    /// `toka.*` kinds are refused.
    /// An array of patterns; with `reserved` (what the grant would do, e.g.
    /// `"publishing"`), a pattern reaching `toka.*` kinds is refused.
    pub(super) fn patterns(
        &self,
        item: &Item,
        key: &str,
        reserved: Option<&str>,
    ) -> Result<PatternSet> {
        let items = self.array(item, key, "an array of patterns")?;
        let mut patterns = Vec::with_capacity(items.len());
        for item in items {
            let text = self.str(item, key)?;
            let pattern = Pattern::parse(text)
                .map_err(|e| self.invalid(item, key, format!("pattern {text:?} {e}")))?;
            // `TOKA.x` too: the reserved first segment is matched in any case.
            if let Some(verb) = reserved.filter(|_| is_system_kind(text)) {
                return Err(self.invalid(
                    item,
                    key,
                    format!(
                        "pattern {text:?} grants {verb} `{SYSTEM_PREFIX}.*` kinds, which only the runtime may use"
                    ),
                ));
            }
            patterns.push(pattern);
        }
        Ok(PatternSet::new(patterns))
    }

    /// A free-form setting as a string: strings as is, other values in their
    /// TOML spelling (`42`, `true`, `[1, 2]`, `{ a = 1 }`).
    pub(super) fn render(&self, item: &Item, path: &str) -> Result<String> {
        match &item.value {
            Value::String(s) => Ok(s.clone()),
            _ => Ok(self.to_value(item, path)?.to_string()),
        }
    }

    pub(super) fn to_value(&self, item: &Item, path: &str) -> Result<toml::Value> {
        Ok(match &item.value {
            Value::String(s) => toml::Value::String(s.clone()),
            Value::Integer { .. } => toml::Value::Integer(self.int(item, path)?),
            Value::Float(float) => toml::Value::Float(
                float
                    .parse()
                    .map_err(|_| self.invalid(item, path, "invalid float"))?,
            ),
            Value::Boolean(b) => toml::Value::Boolean(*b),
            Value::Datetime(d) => toml::Value::Datetime(*d),
            Value::Array(items) => toml::Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.to_value(item, &format!("{path}[{i}]")))
                    .collect::<Result<_>>()?,
            ),
            Value::Table(table) => toml::Value::Table(self.to_table(table, path)?),
        })
    }

    pub(super) fn to_table(&self, table: &Table, path: &str) -> Result<toml::Table> {
        table
            .iter()
            .map(|e| Ok((e.key.clone(), self.to_value(&e.item, &child(path, &e.key))?)))
            .collect()
    }
}

/// An owned table of configuration values that remembers where each was
/// written, kept after loading so a capability can parse it (through
/// [`section`](Self::section)) with errors that point into the file.
///
/// Held in [`RuntimeConfig::declared`](super::RuntimeConfig::declared) (one
/// per declared section) and [`AgentConfig::owned`](super::AgentConfig::owned)
/// (the capability-owned keys of one agent). Two tables compare equal when
/// they hold the same keys and values, wherever those were written.
#[derive(Clone, Default)]
pub struct LocatedTable {
    doc: Arc<Doc>,
    path: String,
    at: usize,
    table: Table,
}

impl fmt::Debug for LocatedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocatedTable")
            .field("path", &self.path)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl PartialEq for LocatedTable {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.table == other.table
    }
}

impl LocatedTable {
    /// `table`, found at `path` (`"vault"`, `"agents[2]"`) whose header
    /// starts at byte `at` of `doc`.
    pub(super) fn new(doc: &Arc<Doc>, path: String, at: usize, table: Table) -> Self {
        LocatedTable {
            doc: Arc::clone(doc),
            path,
            at,
            table,
        }
    }

    /// The getters over this table.
    pub fn section(&self) -> Section<'_> {
        Section {
            doc: &self.doc,
            path: Cow::Borrowed(&self.path),
            at: self.at,
            table: &self.table,
        }
    }

    /// True if the table has no keys.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// A located TOML table: one top-level section, a table nested in one, or
/// the capability-owned keys of one agent (see [`AgentKeys`]).
///
/// Getters take the key's name within the table and return `Ok(None)` when
/// it is absent; errors name the dotted key (`vault.max_blob_mb`,
/// `drivers.s3.bucket`, `agents[0].token_ttl`) and where its value is.
#[derive(Debug, Clone)]
pub struct Section<'a> {
    doc: &'a Doc,
    path: Cow<'a, str>,
    at: usize,
    table: &'a Table,
}

impl<'a> Section<'a> {
    /// Dotted path of the table itself: `"vault"`, `"drivers.s3"`, `"agents[0]"`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Dotted path of `key` in this table, as errors name it:
    /// `"vault.max_blob_mb"`, quoted where TOML needs it (`drivers."s3 west"`).
    pub fn key_path(&self, key: &str) -> String {
        child(&self.path, key)
    }

    /// Where the table starts, `"config/x.toml:7:1"`.
    pub fn location(&self) -> String {
        self.doc.location(self.at)
    }

    /// The table's keys, in table order.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.table.iter().map(|e| e.key.as_str())
    }

    /// True if `key` is in the table.
    pub fn contains(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    /// True if the table has no keys.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn read<T>(
        &self,
        key: &str,
        read: impl FnOnce(&'a Doc, &'a Item, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        match self.table.get(key) {
            Some(item) => read(self.doc, item, &self.key_path(key)).map(Some),
            None => Ok(None),
        }
    }

    /// A string.
    pub fn get_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.read(key, |doc, item, path| doc.str(item, path))
    }

    /// An integer in `min..=max`.
    pub fn get_uint(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>> {
        self.read(key, |doc, item, path| doc.uint(item, path, min, max))
    }

    /// A boolean.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.read(key, |doc, item, path| doc.bool(item, path))
    }

    /// A humantime string (`"5s"`, `"250ms"`) of at least `min`.
    pub fn get_duration(&self, key: &str, min: Duration) -> Result<Option<Duration>> {
        self.read(key, |doc, item, path| doc.duration(item, path, min))
    }

    /// A non-empty path; a relative one is resolved against the config
    /// file's directory, like `[vault] path`.
    pub fn get_path(&self, key: &str) -> Result<Option<PathBuf>> {
        self.read(key, |doc, item, path| doc.resolved_path(item, path))
    }

    /// An array of strings.
    pub fn get_strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.read(key, |doc, item, path| doc.strings(item, path))
    }

    /// An array of topic patterns (see [`crate::topic`]), checked like
    /// `subscribe`.
    pub fn get_patterns(&self, key: &str) -> Result<Option<PatternSet>> {
        self.read(key, |doc, item, path| doc.patterns(item, path, None))
    }

    /// A nested table, with the same getters.
    pub fn get_table(&self, key: &str) -> Result<Option<Section<'a>>> {
        self.read(key, |doc, item, path| {
            Ok(Section {
                doc,
                path: Cow::Owned(path.to_owned()),
                at: item.at(),
                table: doc.table(item, path)?,
            })
        })
    }

    /// Any value, as plain TOML (for a capability that deserializes it itself).
    pub fn get_value(&self, key: &str) -> Result<Option<toml::Value>> {
        self.read(key, |doc, item, path| doc.to_value(item, path))
    }

    /// An error about `key`, at its value, or at the table's start when the
    /// key is absent (a missing required key).
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let at = self.table.get(key).map_or(self.at, Item::at);
        self.doc.error(at, Some(&self.key_path(key)), message)
    }

    /// The report for `key` when it is not one the caller understands, in
    /// the form of [`RuntimeConfig::unknown_keys`](super::RuntimeConfig::unknown_keys):
    /// `"vault.bogus (config/x.toml:3:1)"`; `None` if the key is absent.
    pub fn unknown(&self, key: &str) -> Option<String> {
        let entry = self.table.entry(key)?;
        Some(self.doc.unknown(entry, self.key_path(key)).1)
    }

    /// [`unknown`](Self::unknown) reports for every key not in `known`, in
    /// file order.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<String> {
        let mut found: Unknown = self
            .table
            .iter()
            .filter(|e| !known.contains(&e.key.as_str()))
            .map(|e| self.doc.unknown(e, self.key_path(&e.key)))
            .collect();
        found.sort_by_key(|(offset, _)| *offset);
        found.into_iter().map(|(_, report)| report).collect()
    }
}

/// The keys of one `[[agents]]` table that a capability declared as its own
/// (see [`Declared::agent_keys`](super::Declared::agent_keys)), with the
/// [`Section`] getters (through `Deref`). Its path is `agents[i]`, `i` the
/// agent's 0-based index in the file, so errors read
/// `config/x.toml:3:1: agents[0].token_ttl: ...`; a missing key's
/// [`invalid`](Section::invalid) points at the agent's `[[agents]]` header.
#[derive(Debug, Clone)]
pub struct AgentKeys<'a> {
    agent: &'a str,
    keys: Section<'a>,
}

impl<'a> AgentKeys<'a> {
    pub(super) fn new(agent: &'a str, keys: Section<'a>) -> Self {
        AgentKeys { agent, keys }
    }

    /// The agent's name.
    pub fn agent(&self) -> &'a str {
        self.agent
    }
}

impl<'a> Deref for AgentKeys<'a> {
    type Target = Section<'a>;

    fn deref(&self) -> &Section<'a> {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::testing::{no_env, parse_err};
    use crate::config::{Declared, RuntimeConfig};

    #[test]
    fn type_error_names_key_and_position() {
        let err = parse_err("# comment\n[event_bus]\nbuffer_size = \"x\"\n");
        assert_eq!(err.key(), Some("event_bus.buffer_size"));
        assert_eq!((err.line(), err.column()), (Some(3), Some(15)));
        assert_eq!(
            err.to_string(),
            "config/x.toml:3:15: event_bus.buffer_size: expected an integer, found a string"
        );
    }

    #[test]
    fn out_of_range_numbers_are_rejected() {
        let err = parse_err("[event_bus]\nbuffer_size = 0\n");
        assert_eq!(err.key(), Some("event_bus.buffer_size"));
        assert!(err.to_string().contains("between 1 and 1000000"), "{err}");
        let err = parse_err("[limits]\nmemory_mb = 5000\n");
        assert_eq!(err.key(), Some("limits.memory_mb"));
        let err = parse_err("[event_bus]\nworkers = -2\n");
        assert_eq!(err.key(), Some("event_bus.workers"));
        assert!(
            err.to_string().ends_with("must be at least 1, got -2"),
            "{err}"
        );
    }

    fn declared(text: &str, sections: &[&str], agent_keys: &[&str]) -> RuntimeConfig {
        RuntimeConfig::parse_declared(
            text,
            Path::new("config/x.toml"),
            Path::new("/etc/toka"),
            &Declared {
                sections,
                agent_keys,
            },
            &no_env,
        )
        .unwrap()
    }

    const CAPS: &str = r#"[cache]
dir = "cache"
ttl = "90s"
enabled = true
entries = 10
kinds = ["orders.*"]
names = ["a", "b"]
tier = { name = "hot", size = "big" }
bogus = 1

[[agents]]
name = "A"
cache_mb = "lots"
cache_keys = ["x", 2]
"#;

    #[test]
    fn section_getters_read_values_and_missing_keys_are_none() {
        let cfg = declared(CAPS, &["cache"], &[]);
        let s = cfg.section("cache").unwrap();
        assert_eq!(s.path(), "cache");
        assert_eq!(s.location(), "config/x.toml:1:1");
        assert_eq!(s.get_path("dir").unwrap(), Some("/etc/toka/cache".into()));
        assert_eq!(
            s.get_duration("ttl", Duration::ZERO).unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(s.get_bool("enabled").unwrap(), Some(true));
        assert_eq!(s.get_uint("entries", 1, 100).unwrap(), Some(10));
        assert!(
            s.get_patterns("kinds")
                .unwrap()
                .unwrap()
                .matches("orders.x")
        );
        assert_eq!(s.get_strings("names").unwrap().unwrap(), ["a", "b"]);
        assert_eq!(
            s.get_value("entries").unwrap(),
            Some(toml::Value::Integer(10))
        );
        let tier = s.get_table("tier").unwrap().unwrap();
        assert_eq!(tier.path(), "cache.tier");
        assert_eq!(tier.get_str("name").unwrap(), Some("hot"));

        assert_eq!(s.get_str("absent").unwrap(), None);
        assert_eq!(s.get_uint("absent", 0, 1).unwrap(), None);
        assert!(s.get_table("absent").unwrap().is_none());
        assert!(cfg.section("nope").is_none());
        assert_eq!(
            s.keys().collect::<Vec<_>>().len(),
            8,
            "every key of the table"
        );
    }

    #[test]
    fn section_errors_name_file_line_column_and_key() {
        let cfg = declared(CAPS, &["cache"], &[]);
        let s = cfg.section("cache").unwrap();

        let err = s.get_uint("dir", 0, 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config/x.toml:2:7: cache.dir: expected an integer, found a string"
        );
        let err = s.get_uint("entries", 20, 30).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config/x.toml:5:11: cache.entries: must be between 20 and 30, got 10"
        );
        let err = s.get_bool("ttl").unwrap_err();
        assert_eq!((err.key(), err.line()), (Some("cache.ttl"), Some(3)));
        let err = s.get_duration("ttl", Duration::from_secs(600)).unwrap_err();
        assert!(err.to_string().contains("must be at least 10m"), "{err}");
        let err = s.get_table("tier").unwrap().unwrap().get_uint("size", 0, 1);
        let err = err.unwrap_err();
        assert_eq!(err.key(), Some("cache.tier.size"));
        assert_eq!((err.line(), err.column()), (Some(8), Some(31)));
        let err = s.get_table("entries").unwrap_err();
        assert!(err.to_string().contains("expected a table"), "{err}");

        let err = s.invalid("entries", "too few");
        assert_eq!(
            err.to_string(),
            "config/x.toml:5:11: cache.entries: too few"
        );
        let err = s.invalid("required", "missing required key `required`");
        assert_eq!(
            err.to_string(),
            "config/x.toml:1:1: cache.required: missing required key `required`"
        );
    }

    #[test]
    fn section_reports_unknown_keys_in_file_order() {
        let cfg = declared(CAPS, &["cache"], &[]);
        let s = cfg.section("cache").unwrap();
        assert_eq!(
            s.unknown("bogus").as_deref(),
            Some("cache.bogus (config/x.toml:9:1)")
        );
        assert_eq!(s.unknown("absent"), None);
        let known = ["dir", "ttl", "enabled", "entries", "kinds", "names"];
        assert_eq!(
            s.unknown_keys(&known),
            [
                "cache.tier (config/x.toml:8:1)",
                "cache.bogus (config/x.toml:9:1)"
            ]
        );
        // The runtime itself does not report keys of a declared section.
        assert!(cfg.unknown_keys.is_empty());
    }

    #[test]
    fn agent_keys_errors_name_the_agent_key_and_position() {
        let cfg = declared(CAPS, &["cache"], &["cache_mb", "cache_keys", "cache_dir"]);
        let keys = cfg.agent_keys(0).unwrap();
        assert_eq!((keys.agent(), keys.path()), ("A", "agents[0]"));
        assert_eq!(keys.location(), cfg.agents[0].location);

        let err = keys.get_uint("cache_mb", 1, 64).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config/x.toml:13:12: agents[0].cache_mb: expected an integer, found a string"
        );
        let err = keys.get_strings("cache_keys").unwrap_err();
        assert_eq!(err.key(), Some("agents[0].cache_keys"));
        assert_eq!((err.line(), err.column()), (Some(14), Some(20)));
        assert_eq!(keys.get_path("cache_dir").unwrap(), None);
        let err = keys.invalid("cache_dir", "required with `cache_mb`");
        assert_eq!(
            err.to_string(),
            "config/x.toml:11:1: agents[0].cache_dir: required with `cache_mb`"
        );
        assert_eq!(
            keys.unknown_keys(&["cache_mb"]),
            ["agents[0].cache_keys (config/x.toml:14:1)"]
        );
        assert!(cfg.agent_keys(1).is_none());
    }
}
