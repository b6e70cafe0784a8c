//! The journey builder's compiled helpers (trailmark/compiled.py loads them): enriched run
//! records read into events, for the Kafka journey builder (`read_runs`: trailmark/runtime.py,
//! `parse_enriched`); dicts' values as columns (`columns`); session ids (`session_id`); a funnel's
//! levels from its streamed step rows (`FunnelRows`, src/funnel.rs); attribution's credits from its
//! streamed rows (`AttributionRows`, src/attribution.rs), both read by src/blocks.rs. The reader:
//!
//! A run record is `{"fields":[names],"rows":[[values],...]}` (`EnrichStage.serialized`): a
//! visitor's events, each a list of values in the order of the names. `read_runs` makes each row
//! the dict `parse_enriched` makes of it (`dict(zip(names, row))` of orjson's values), with one
//! difference that no reader can see: a string that came before in the same call, in the same
//! field, is the same object again. Most of an event's ~70 values are such strings (a type, a
//! channel, a browser, a country, an empty one...): the batch then holds a few thousand distinct
//! strings instead of a million, and building the events' columns, writing them as JSON and
//! freeing them touch far less memory.
//!
//! As it reads, it also keeps each value's JSON text, column by column (`RecordTexts`): a journey builder
//! writing to a ClickHouse server sends a batch's `events` rows as one `JSONColumns` document copied
//! from them (`RecordTexts::body`), not as columns of the dicts written as JSON again. Such a builder's
//! dicts leave out the fields it only stores (`read_runs`' `skip`): their values are checked as they
//! would be read, kept only as text, and `RecordTexts::full` makes the dicts whole where needed.
//!
//! What it does not read exactly as orjson and `parse_enriched` do, it leaves to them: a record that
//! is not exactly a run, names that are not distinct strings, a row that is not a list of as many
//! values, a string it cannot decode, a number that is no 64-bit integer or plain float, come back
//! as None and the record is read by Python; a list or an object value is read by the `loads` it is
//! given (orjson's).

mod attribution;
mod blocks;
mod funnel;

use rustc_hash::FxHashMap;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use serde::de::DeserializeSeed;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Run<'a> {
    #[serde(borrow)]
    fields: &'a RawValue,
    /// each row's values as their JSON text, read in the record's one scan
    #[serde(borrow)]
    rows: Vec<Vec<&'a RawValue>>,
}

/// A field list read once: its names as interned Python strings, where `enrich_errors` is, and the
/// strings seen in each field.
struct Layout<'a> {
    names: Vec<Py<PyString>>,
    /// which of them the dicts hold (the others are only in `RecordTexts`)
    kept: Vec<bool>,
    errors: Option<usize>,
    seen: Vec<Seen<'a>>,
    /// every name, each None: an event's dict starts as a copy of it, its table made once at the
    /// right size (built key by key, a dict of ~70 grows four times)
    template: Py<PyDict>,
}

/// Strings and numbers seen in one field, by their JSON text: the field stops keeping them once few
/// come again.
#[derive(Default)]
struct Seen<'a> {
    values: FxHashMap<&'a str, Py<PyAny>>,
    tries: u32,
    hits: u32,
}

const KEEP_MAX_LEN: usize = 64; // longer strings are rarely repeated (ids, URLs, JSON texts)
const KEEP_TRIES: u32 = 256; // after that many strings of a field, it keeps them only if
const KEEP_MIN_HITS: u32 = 64; // at least a quarter came before

impl<'a> Seen<'a> {
    fn keeps(&self) -> bool {
        self.tries < KEEP_TRIES || self.hits >= KEEP_MIN_HITS
    }
}

fn layout<'a>(py: Python<'_>, fields: &str, skip: &[String]) -> Option<Layout<'a>> {
    let names: Vec<String> = serde_json::from_str(fields).ok()?;
    let mut distinct = std::collections::HashSet::with_capacity(names.len());
    if !names.iter().all(|n| distinct.insert(n.as_str())) {
        return None;
    }
    let errors = names.iter().position(|n| n == "enrich_errors");
    let seen = names.iter().map(|_| Seen::default()).collect();
    let kept: Vec<bool> = names.iter().map(|n| !skip.contains(n)).collect();
    let names: Vec<Py<PyString>> = names.iter().map(|n| PyString::intern(py, n).unbind()).collect();
    let template = PyDict::new(py);
    for (name, &keep) in names.iter().zip(&kept) {
        if keep {
            template.set_item(name.bind(py), py.None()).ok()?;
        }
    }
    Some(Layout { names, kept, errors, seen, template: template.unbind() })
}

/// Whether `value` would read this JSON text (a field the dicts leave out is checked as it would be
/// read, so that which records Python reads does not depend on which fields the dicts hold).
fn readable<'py>(py: Python<'py>, raw: &str, loads: &Bound<'py, PyAny>) -> bool {
    match raw.as_bytes().first() {
        Some(b't' | b'f' | b'n') => matches!(raw, "true" | "false" | "null"),
        Some(b'[' | b'{') => raw == "[]" || raw == "{}" || loads.call1((PyBytes::new(py, raw.as_bytes()),)).is_ok(),
        // the scan checked its escapes but for what a \u escape names (a lone surrogate is no text)
        Some(b'"') => !raw.contains("\\u") || text_of(raw).is_some(),
        Some(b'-' | b'0'..=b'9') => number_of(raw).is_some(),
        _ => false,
    }
}

/// The text of a JSON string (`raw` starts with a quote), its escapes decoded; None when it cannot
/// be decoded (a lone surrogate).
fn text_of(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let inner = &raw[1..raw.len() - 1];
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(std::borrow::Cow::Owned)
    } else {
        Some(std::borrow::Cow::Borrowed(inner))
    }
}

/// A JSON number as `value` reads it: a finite float, a 64-bit integer, or None (orjson's answer
/// for an overflowing float, or an integer past 64 bits, is its own).
enum Number {
    Float(f64),
    Int(i64),
    Big(u64),
}

fn number_of(raw: &str) -> Option<Number> {
    if raw.contains(['.', 'e', 'E']) {
        raw.parse::<f64>().ok().filter(|f| f.is_finite()).map(Number::Float)
    } else if let Ok(i) = raw.parse::<i64>() {
        Some(Number::Int(i))
    } else {
        raw.parse::<u64>().ok().map(Number::Big)
    }
}

/// The value of one field of an event as `parse_enriched` reads it: `value`'s, but that an empty
/// `enrich_errors` (`errors`) is an empty tuple (see _errors_at).
fn field_value<'py, 'a>(
    py: Python<'py>,
    raw: &'a str,
    errors: bool,
    seen: &mut Seen<'a>,
    loads: &Bound<'py, PyAny>,
) -> Option<Bound<'py, PyAny>> {
    if errors && raw == "[]" {
        return Some(PyTuple::empty(py).into_any());
    }
    let v = value(py, raw, seen, loads)?;
    if errors && v.downcast::<PyList>().is_ok_and(|l| l.is_empty()) {
        return Some(PyTuple::empty(py).into_any());
    }
    Some(v)
}

/// The Python value of one JSON value, or None when Python must read the record. A string or a
/// number of a field that repeats its values is the object made the first time (``Seen``).
fn value<'py, 'a>(
    py: Python<'py>,
    raw: &'a str,
    seen: &mut Seen<'a>,
    loads: &Bound<'py, PyAny>,
) -> Option<Bound<'py, PyAny>> {
    let first = *raw.as_bytes().first()?;
    match first {
        b't' if raw == "true" => return Some(true.into_pyobject(py).ok()?.to_owned().into_any()),
        b'f' if raw == "false" => return Some(false.into_pyobject(py).ok()?.to_owned().into_any()),
        b'n' if raw == "null" => return Some(py.None().into_bound(py)),
        b'[' | b'{' => return loads.call1((PyBytes::new(py, raw.as_bytes()),)).ok(),
        b'"' | b'-' | b'0'..=b'9' => {}
        _ => return None,
    }
    let keep = raw.len() <= KEEP_MAX_LEN && seen.keeps();
    if keep {
        seen.tries = seen.tries.saturating_add(1);
        if let Some(v) = seen.values.get(raw) {
            seen.hits = seen.hits.saturating_add(1);
            return Some(v.bind(py).clone());
        }
    }
    let v = if first == b'"' {
        PyString::new(py, &text_of(raw)?).into_any()
    } else {
        match number_of(raw)? {
            Number::Float(f) => f.into_pyobject(py).ok()?.into_any(),
            Number::Int(i) => i.into_pyobject(py).ok()?.into_any(),
            Number::Big(u) => u.into_pyobject(py).ok()?.into_any(),
        }
    };
    if keep {
        seen.values.insert(raw, v.clone().unbind());
    }
    Some(v)
}

/// The events of one record, or None (see the module's text). `last` is the layout of the record
/// before (most records of a batch share one: comparing their names' text is cheaper than hashing it).
#[allow(clippy::too_many_arguments)]
fn read_run<'py, 'a>(
    py: Python<'py>,
    record: &'a [u8],
    layouts: &mut Vec<(&'a str, Layout<'a>)>,
    last: &mut usize,
    loads: &Bound<'py, PyAny>,
    events: &mut Vec<Bound<'py, PyDict>>,
    texts: &mut Texts<'a>,
    skip: &[String],
) -> Option<()> {
    let text = std::str::from_utf8(record).ok()?;
    if let Some(rows) = same_fields(text, layouts.get(*last).map(|(f, _)| *f)) {
        // the rows read as they are scanned, into the last layout
        let (fields, layout) = &mut layouts[*last];
        texts.layout(*last, fields, layout.names.len());
        let mut reader = Reader { py, layout, texts, events, loads, event: None, at: 0 };
        let mut scan = serde_json::Deserializer::from_str(rows);
        RowsSeed(&mut reader).deserialize(&mut scan).ok()?;
        return scan.end().ok();
    }
    let run: Run<'a> = serde_json::from_str(text).ok()?;
    let fields = run.fields.get();
    if layouts.get(*last).map(|(f, _)| *f != fields).unwrap_or(true) {
        *last = match layouts.iter().position(|(f, _)| *f == fields) {
            Some(at) => at,
            None => {
                if layouts.len() >= LAYOUTS_MAX {
                    return None;
                }
                layouts.push((fields, layout(py, fields, skip)?));
                layouts.len() - 1
            }
        };
    }
    let (fields, layout) = &mut layouts[*last];
    texts.layout(*last, fields, layout.names.len());
    let mut reader = Reader { py, layout, texts, events, loads, event: None, at: 0 };
    for values in run.rows {
        reader.row()?;
        for value in values {
            reader.value(value.get())?;
        }
        reader.row_done()?;
    }
    Some(())
}

/// The text of the rows of a record whose names are, byte for byte, those of the record before
/// (`fields`: most records of a batch), which `read_run` then reads as it scans them: not its ~70
/// names again (nor compared with the layouts' twice), nor a list of each row's values. What it
/// does not take (any other form, whitespace around the names) is read whole by `read_run`. Both
/// readings accept the same records: the names are one complete JSON value, so what follows them
/// is the rows' value in either.
fn same_fields<'a>(text: &'a str, fields: Option<&str>) -> Option<&'a str> {
    text.strip_prefix("{\"fields\":")?
        .strip_prefix(fields?)?
        .strip_prefix(",\"rows\":")?
        .strip_suffix('}')
}

/// A record's rows made into events, value by value, as they are read.
struct Reader<'s, 'py, 'a> {
    py: Python<'py>,
    layout: &'s mut Layout<'a>,
    texts: &'s mut Texts<'a>,
    events: &'s mut Vec<Bound<'py, PyDict>>,
    loads: &'s Bound<'py, PyAny>,
    /// the event of the row being read, and its next value's place
    event: Option<Bound<'py, PyDict>>,
    at: usize,
}

impl<'a> Reader<'_, '_, 'a> {
    fn row(&mut self) -> Option<()> {
        self.event = Some(self.layout.template.bind(self.py).copy().ok()?);
        self.at = 0;
        Some(())
    }

    /// The row's next value, as its JSON text; None: a value too many, or one Python must read.
    fn value(&mut self, raw: &'a str) -> Option<()> {
        let (i, layout) = (self.at, &mut *self.layout);
        if i >= layout.names.len() {
            return None;
        }
        self.at += 1;
        self.texts.push(i, raw);
        if !layout.kept[i] {
            return readable(self.py, raw, self.loads).then_some(());
        }
        let v = field_value(self.py, raw, layout.errors == Some(i), &mut layout.seen[i], self.loads)?;
        self.event.as_ref()?.set_item(layout.names[i].bind(self.py), v).ok()
    }

    /// The row read whole; None: a value too few.
    fn row_done(&mut self) -> Option<()> {
        if self.at != self.layout.names.len() {
            return None;
        }
        self.texts.row_done();
        self.events.push(self.event.take()?);
        Some(())
    }
}

/// A record's rows (`[[value, ...], ...]`) handed to a `Reader` as they are scanned. Any failure, the
/// scan's or the reader's, fails the record (its partial rows are truncated by `read_runs`).
struct RowsSeed<'r, 's, 'py, 'a>(&'r mut Reader<'s, 'py, 'a>);

struct RowSeed<'r, 's, 'py, 'a>(&'r mut Reader<'s, 'py, 'a>);

fn declined<E: serde::de::Error>() -> E {
    E::custom("a value Python reads")
}

impl<'a> serde::de::DeserializeSeed<'a> for RowsSeed<'_, '_, '_, 'a> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> serde::de::Visitor<'a> for RowsSeed<'_, '_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of rows")
    }

    fn visit_seq<A: serde::de::SeqAccess<'a>>(self, mut rows: A) -> Result<(), A::Error> {
        while rows.next_element_seed(RowSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

impl<'a> serde::de::DeserializeSeed<'a> for RowSeed<'_, '_, '_, 'a> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> serde::de::Visitor<'a> for RowSeed<'_, '_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row: a list of values")
    }

    fn visit_seq<A: serde::de::SeqAccess<'a>>(self, mut values: A) -> Result<(), A::Error> {
        self.0.row().ok_or_else(declined)?;
        while let Some(value) = values.next_element::<&'a RawValue>()? {
            self.0.value(value.get()).ok_or_else(declined)?;
        }
        self.0.row_done().ok_or_else(declined)
    }
}

const LAYOUTS_MAX: usize = 64; // distinct field lists in one call; more: Python reads the records

/// The events of `records` (bytes) as dicts, all in one list, and for each record how many of them
/// are its, or -1 when Python must read it. `loads` reads a list or an object value (orjson.loads).
/// One list rather than one per record: a batch's ~17k lists, kept until it is read, would each
/// count towards the cyclic GC's next collection.
///
/// Third, the events' values as their JSON text (`RecordTexts`). `skip`: fields the dicts leave out
/// (their values are checked as they would be read, and kept only in the `RecordTexts`).
#[pyfunction]
#[pyo3(signature = (records, loads, skip=None))]
fn read_runs<'py>(
    py: Python<'py>,
    records: Vec<Bound<'py, PyBytes>>,
    loads: Bound<'py, PyAny>,
    skip: Option<Vec<String>>,
) -> PyResult<(Bound<'py, PyList>, Vec<isize>, Option<RecordTexts>)> {
    let skip = skip.unwrap_or_default();
    let mut layouts: Vec<(&str, Layout<'_>)> = Vec::new();
    let mut last = 0;
    let mut events: Vec<Bound<'py, PyDict>> = Vec::with_capacity(records.len() * 2);
    let mut counts = Vec::with_capacity(records.len());
    let mut texts = Texts::default();
    for record in &records {
        let before = events.len();
        match read_run(py, record.as_bytes(), &mut layouts, &mut last, &loads, &mut events, &mut texts, &skip) {
            Some(()) => counts.push((events.len() - before) as isize),
            None => {
                events.truncate(before);
                texts.truncate(before);
                counts.push(-1);
            }
        }
    }
    if texts.overflow {
        // offsets past 4 GiB (a batch is far smaller): no RecordTexts, and every record read by Python,
        // whose dicts hold every field
        drop(events);
        for set in std::mem::take(&mut texts.sets) {
            spare(set.columns);
        }
        return Ok((PyList::empty(py), vec![-1; records.len()], None));
    }
    let events = PyList::new(py, events)?;
    let mut sets = Vec::with_capacity(texts.sets.len());
    for set in std::mem::take(&mut texts.sets) {
        let names: Vec<String> = serde_json::from_str(set.fields)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("field names: {e}")))?;
        sets.push((names, set.columns));
    }
    let raw = if events.is_empty() {
        for (_, columns) in sets {
            spare(columns);
        }
        None
    } else {
        Some(RecordTexts {
            events: events.clone().unbind(),
            sets,
            rows: texts.rows,
            slim: !skip.is_empty(),
            loads: loads.clone().unbind(),
        })
    };
    Ok((events, counts, raw))
}

/// The JSON text of every value `read_runs` read, column by column, while it reads (a copy of the
/// record's bytes, no parse): what `RecordTexts` is made of. Kept by column, not by row: the body is
/// written column after column, and a column's values then lie side by side (written by row, each
/// value of a 20k-event body was a cache miss: 1.8 us per event).
#[derive(Default)]
struct Texts<'a> {
    /// one per list of names met, the first one's first
    sets: Vec<Set<'a>>,
    /// the set of the record being read
    at: usize,
    /// each row read whole: its set, and its place in it
    rows: Vec<(u32, u32)>,
    /// an offset past 4 GiB was met (see `push`)
    overflow: bool,
}

/// The values of the rows of one list of names.
struct Set<'a> {
    fields: &'a str,
    columns: Vec<Column>,
    rows: usize,
}

/// One field's values as their JSON text, separated by commas, and where each ends.
#[derive(Default)]
struct Column {
    text: Vec<u8>,
    ends: Vec<u32>,
    /// what `RecordTexts.body` must look at value by value: a `""`, a `null`, a value no string
    empty: bool,
    null: bool,
    other: bool,
}

impl Column {
    fn value(&self, k: usize) -> &[u8] {
        let start = if k == 0 { 0 } else { self.ends[k - 1] as usize + 1 };
        &self.text[start..self.ends[k] as usize]
    }

    /// Keep the first `rows` values.
    fn truncate(&mut self, rows: usize) {
        if self.ends.len() > rows {
            self.ends.truncate(rows);
            self.text.truncate(self.ends.last().map(|&e| e as usize).unwrap_or(0));
        }
    }
}

/// Column buffers of earlier calls, their memory kept: a batch's ~10 MB of texts written into pages
/// already touched rather than new ones.
static SPARE: std::sync::Mutex<Vec<Column>> = std::sync::Mutex::new(Vec::new());
const SPARE_MAX: usize = 256;

/// Column buffers of earlier calls (emptied) for `width` columns.
fn spare_columns(width: usize) -> Vec<Column> {
    let mut spare = SPARE.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
    let columns = (0..width).map(|_| spare.pop().unwrap_or_default()).collect();
    if let Ok(mut s) = SPARE.lock() {
        s.extend(spare);
    }
    columns
}

/// Give column buffers back for later calls (emptied, their memory kept).
fn spare(columns: Vec<Column>) {
    if let Ok(mut s) = SPARE.lock() {
        for mut column in columns {
            if s.len() >= SPARE_MAX {
                break;
            }
            column.text.clear();
            column.ends.clear();
            column.empty = false;
            column.null = false;
            column.other = false;
            s.push(column);
        }
    }
}

impl<'a> Texts<'a> {
    /// The record being read has the names of `read_runs`' layout `at` (`fields`, `width` of them):
    /// the sets are made in the layouts' order, one each, so a layout's set is the one at its place.
    fn layout(&mut self, at: usize, fields: &'a str, width: usize) {
        if at == self.sets.len() {
            self.sets.push(Set { fields, columns: spare_columns(width), rows: 0 });
        }
        debug_assert!(self.sets[at].fields == fields);
        self.at = at;
    }

    fn push(&mut self, c: usize, raw: &str) {
        let column = &mut self.sets[self.at].columns[c];
        if !column.ends.is_empty() {
            column.text.push(b',');
        }
        column.text.extend_from_slice(raw.as_bytes());
        match raw.as_bytes().first() {
            Some(b'"') => column.empty |= raw.len() == 2,
            Some(b'n') => column.null = true,
            _ => column.other = true,
        }
        // a batch is bounded far below 4 GiB (records of at most 128 KiB, a few thousand of them)
        match u32::try_from(column.text.len()) {
            Ok(end) => column.ends.push(end),
            Err(_) => {
                self.overflow = true;
                column.ends.push(0);
            }
        }
    }

    fn row_done(&mut self) {
        let set = &mut self.sets[self.at];
        self.rows.push((self.at as u32, set.rows as u32));
        set.rows += 1;
    }

    /// Forget the rows after the first `rows` (a record that Python reads instead), and the values
    /// pushed of a row not done.
    fn truncate(&mut self, rows: usize) {
        for &(set, _) in &self.rows[rows.min(self.rows.len())..] {
            self.sets[set as usize].rows -= 1;
        }
        self.rows.truncate(rows);
        for set in &mut self.sets {
            for column in &mut set.columns {
                column.truncate(set.rows);
            }
        }
    }
}

/// A batch's events as `read_runs` read them: each value's JSON text as it came, by list of names
/// (`names`: the first list's), beside the dicts it made (`events`). The journey builder writes a
/// batch's `events` rows from it as one `JSONColumns` body (`body`): each value copied as it came,
/// with no column lists made of the dicts and no JSON written of them. Where the dicts leave fields
/// out (`read_runs`' `skip`), `full` makes them whole.
#[pyclass(frozen, module = "trailmark._native")]
struct RecordTexts {
    events: Py<PyList>,
    /// the names of each set, and its values by column
    /// (never changed once made: read from any thread without a lock)
    sets: Vec<(Vec<String>, Vec<Column>)>,
    /// each event's set and place in it
    rows: Vec<(u32, u32)>,
    /// whether the dicts leave fields out
    slim: bool,
    /// `read_runs`' `loads`, for a list or an object value `full` reads
    loads: Py<PyAny>,
}

impl Drop for RecordTexts {
    fn drop(&mut self) {
        for (_, columns) in &mut self.sets {
            spare(std::mem::take(columns));
        }
    }
}

impl RecordTexts {
    /// The row of each of `events` (dicts this read made, in the order it made them), or None.
    fn rows_of(&self, py: Python<'_>, events: &[Bound<'_, PyAny>]) -> Option<Vec<usize>> {
        let made = self.events.bind(py);
        let mut rows: Vec<usize> = Vec::with_capacity(events.len());
        let mut r = 0;
        for ev in events {
            while r < made.len() && made.get_item(r).ok()?.as_ptr() != ev.as_ptr() {
                r += 1;
            }
            if r == made.len() {
                return None;
            }
            rows.push(r);
            r += 1;
        }
        Some(rows)
    }
}

/// A column's values as `RecordTexts.body` writes them.
enum Kind {
    /// as they came
    Plain,
    /// JSON text (a string): `null` is `"{}"`, anything else but a string makes the body None
    Json,
    /// a time: `""` or `null` is the given text, anything else but a string makes the body None
    Time,
}

/// Whether a JSON text is the string `"group"` (escaped or not).
fn is_group(v: &[u8]) -> bool {
    v == b"\"group\""
        || (v.first() == Some(&b'"') && std::str::from_utf8(v).ok().and_then(text_of).is_some_and(|t| t == "group"))
}

#[pymethods]
impl RecordTexts {
    /// The names of the values of the first record's rows, in order (`body` writes those rows).
    #[getter]
    fn names(&self) -> Vec<String> {
        self.sets.first().map(|(names, _)| names.clone()).unwrap_or_default()
    }

    /// Whether the dicts leave fields out (`full` makes them whole).
    #[getter]
    fn slim(&self) -> bool {
        self.slim
    }

    /// `events` (dicts this read made, in the order it made them) with every field, as the reader
    /// makes them when it leaves none out; None for an event it did not make.
    fn full<'py>(&self, py: Python<'py>, events: Vec<Bound<'py, PyAny>>) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(rows) = self.rows_of(py, &events) else {
            return Ok(None);
        };
        let loads = self.loads.bind(py);
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (set, k) = self.rows[row];
            let (names, columns) = &self.sets[set as usize];
            let event = PyDict::new(py);
            for (name, column) in names.iter().zip(columns.iter()) {
                let raw = std::str::from_utf8(column.value(k as usize))?;
                let Some(v) = field_value(py, raw, name == "enrich_errors", &mut Seen::default(), loads) else {
                    return Ok(None);
                };
                event.set_item(name, v)?;
            }
            out.push(event);
        }
        Ok(Some(PyList::new(py, out)?))
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.events.bind(py).len()
    }

    /// The `JSONColumns` body of `events` (dicts this read made, in the order it made them: a subset
    /// of them) for `columns` (names of its fields, in the order written), followed by `tail`'s
    /// members (an encoded JSON object's text of other columns, or empty), as `{"name":[values],...}`.
    /// Each value is written as its JSON text came, but that a column of `json` (text holding JSON) is
    /// `"{}"` for a `null`, a column of `times` is `epoch` (a JSON string) for `""` or `null`, and in
    /// a row whose `type` is `"group"` a column of `blanks` is its given JSON text.
    /// None when it cannot: an event it did not read (or not in its order), a column it has not, a
    /// value of a `json` or `times` column that is no string or null.
    #[allow(clippy::too_many_arguments)]
    fn body<'py>(
        &self,
        py: Python<'py>,
        events: Vec<Bound<'py, PyAny>>,
        columns: Vec<String>,
        json: Vec<String>,
        times: Vec<String>,
        epoch: &str,
        blanks: std::collections::HashMap<String, String>,
        tail: &[u8],
    ) -> Option<Bound<'py, PyBytes>> {
        // the events' rows: all of the first set (the first record's names)
        let rows: Vec<usize> = self
            .rows_of(py, &events)?
            .into_iter()
            .map(|row| match self.rows[row] {
                (0, k) => Some(k as usize),
                _ => None,
            })
            .collect::<Option<_>>()?;
        let (names, cols) = self.sets.first()?;
        let every = rows.len() == cols.first().map(|c| c.ends.len()).unwrap_or(0);
        let at = |name: &str| names.iter().position(|n| n == name);
        let groups: Vec<bool> = match at("type") {
            Some(t) if !blanks.is_empty() => rows.iter().map(|&row| is_group(cols[t].value(row))).collect(),
            _ => Vec::new(),
        };
        let any_group = groups.iter().any(|&g| g);
        let epoch_text = serde_json::to_string(epoch).ok()?;
        let mut plan = Vec::with_capacity(columns.len());
        for name in &columns {
            let c = at(name)?;
            let column = &cols[c];
            let kind = if json.contains(name) {
                if column.other {
                    return None;
                }
                Kind::Json
            } else if times.contains(name) {
                if column.other {
                    return None;
                }
                Kind::Time
            } else {
                Kind::Plain
            };
            let blank = if any_group { blanks.get(name) } else { None };
            // written as the column came, when nothing of it changes
            let whole = every
                && blank.is_none()
                && match kind {
                    Kind::Plain => true,
                    Kind::Json => !column.null,
                    Kind::Time => !column.null && !column.empty,
                };
            plan.push((name, column, kind, blank, whole));
        }
        let tail = tail.strip_prefix(b"{").and_then(|t| t.strip_suffix(b"}")).unwrap_or(b"");
        let mut quoted = Vec::with_capacity(plan.len());
        for (name, ..) in &plan {
            quoted.push(serde_json::to_string(name).ok()?);
        }
        // written twice: once counting its bytes, once into a bytes object of that size (no buffer of
        // ~10 MB a batch copied, and its pages touched, in between)
        let write = |out: &mut dyn Sink| {
            out.put(b"{");
            for (n, (_, column, kind, blank, whole)) in plan.iter().enumerate() {
                if n > 0 {
                    out.put(b",");
                }
                out.put(quoted[n].as_bytes());
                out.put(b":[");
                if *whole {
                    out.put(&column.text);
                } else {
                    for (k, &row) in rows.iter().enumerate() {
                        if k > 0 {
                            out.put(b",");
                        }
                        let v = column.value(row);
                        match (blank, kind) {
                            (Some(b), _) if groups[k] => out.put(b.as_bytes()),
                            (_, Kind::Json) if v == b"null" => out.put(b"\"{}\""),
                            (_, Kind::Time) if v == b"\"\"" || v == b"null" => out.put(epoch_text.as_bytes()),
                            _ => out.put(v),
                        }
                    }
                }
                out.put(b"]");
            }
            if !tail.is_empty() {
                if !plan.is_empty() {
                    out.put(b",");
                }
                out.put(tail);
            }
            out.put(b"}");
        };
        let mut count = Count(0);
        write(&mut count);
        PyBytes::new_with(py, count.0, |buf| {
            let mut fill = Fill { buf, at: 0 };
            write(&mut fill);
            debug_assert_eq!(fill.at, fill.buf.len());
            Ok(())
        })
        .ok()
    }
}

/// Where `RecordTexts.body` writes: bytes counted, or copied.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

struct Count(usize);

impl Sink for Count {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

struct Fill<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Sink for Fill<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        self.buf[self.at..end].copy_from_slice(bytes);
        self.at = end;
    }
}

/// `names`' values of `rows` (dicts) as columns, one list per name, in the order of `rows`: what
/// schemas.columns.as_columns gives (a row without one of them raises KeyError), in one pass.
///
/// A batch's event dicts all have one layout (the same key objects in the same order: the reader's
/// template, or the enricher's literals), so each row is walked in its own order with no lookup,
/// its keys checked against the first row's; a row of another layout is looked up name by name.
/// as_columns makes a tuple of each row's values and transposes the tuples: every value is taken
/// three times and the tuples are made and freed. The walk reads each dict's entries as borrowed
/// references (`PyDict_Next`) and the lists take the references gathered (`PyList_SetItem`): a value
/// costs one reference count, not the three a walk through owned references costs (measured alone:
/// 0.17 against 0.23 us per row of 13 values; a batch's events columns 0.90-0.99 against 1.28-1.40
/// us per event).
#[pyfunction]
fn columns<'py>(
    py: Python<'py>,
    names: Vec<Bound<'py, PyString>>,
    rows: Vec<Bound<'py, PyDict>>,
) -> PyResult<Vec<Bound<'py, PyList>>> {
    let mut cols = Gathered(names.iter().map(|_| Vec::with_capacity(rows.len())).collect());
    // the first row's keys, and for each the column it fills (None: not wanted)
    let mut order: Vec<*mut ffi::PyObject> = Vec::new();
    let mut slots: Vec<Option<usize>> = Vec::new();
    let mut keep: Vec<Bound<'py, PyAny>> = Vec::new(); // holds the first row's keys while they are compared
    if let Some(first) = rows.first() {
        for key in first.keys() {
            let mut slot = None;
            for (c, name) in names.iter().enumerate() {
                if name.as_any().eq(&key)? {
                    slot = Some(c);
                    break;
                }
            }
            slots.push(slot);
            order.push(key.as_ptr());
            keep.push(key);
        }
    }
    let wanted = slots.iter().filter(|s| s.is_some()).count();
    for (r, row) in rows.iter().enumerate() {
        let mut same = row.len() == order.len() && wanted == names.len();
        if same {
            let (mut pos, mut key, mut value): (ffi::Py_ssize_t, *mut ffi::PyObject, *mut ffi::PyObject) =
                (0, std::ptr::null_mut(), std::ptr::null_mut());
            let mut j = 0;
            // SAFETY: the dict is not changed while it is walked (no Python code runs meanwhile);
            // each value kept is given its own reference before it is pushed
            while unsafe { ffi::PyDict_Next(row.as_ptr(), &mut pos, &mut key, &mut value) } != 0 {
                if j >= order.len() || key != order[j] {
                    same = false;
                    break;
                }
                if let Some(c) = slots[j] {
                    unsafe { ffi::Py_INCREF(value) };
                    cols.0[c].push(value);
                }
                j += 1;
            }
        }
        if !same {
            cols.truncate(r);
            for (c, name) in names.iter().enumerate() {
                match row.get_item(name)? {
                    Some(value) => cols.0[c].push(value.into_ptr()),
                    None => return Err(pyo3::exceptions::PyKeyError::new_err(name.clone().unbind())),
                }
            }
        }
    }
    drop(keep);
    let mut lists = Vec::with_capacity(names.len());
    for col in cols.0.iter_mut() {
        let values = std::mem::take(col);
        // SAFETY: a new list of the column's length, each slot given one of the references gathered
        // (PyList_SetItem takes it over), in order; an error leaves the rest to Gathered's drop
        let list = unsafe { ffi::PyList_New(values.len() as ffi::Py_ssize_t) };
        if list.is_null() {
            *col = values;
            return Err(PyErr::fetch(py));
        }
        let list = unsafe { Bound::from_owned_ptr(py, list) };
        for (i, value) in values.into_iter().enumerate() {
            unsafe { ffi::PyList_SetItem(list.as_ptr(), i as ffi::Py_ssize_t, value) };
        }
        lists.push(unsafe { list.downcast_into_unchecked::<PyList>() });
    }
    Ok(lists)
}

/// References gathered for the columns, given back if the columns are not made.
struct Gathered(Vec<Vec<*mut ffi::PyObject>>);

impl Gathered {
    /// Keep the first `rows` values of each column.
    fn truncate(&mut self, rows: usize) {
        for col in self.0.iter_mut() {
            for value in col.drain(rows.min(col.len())..) {
                // SAFETY: each gathered pointer holds one reference, given back once
                unsafe { ffi::Py_DECREF(value) };
            }
        }
    }
}

impl Drop for Gathered {
    fn drop(&mut self) {
        self.truncate(0);
    }
}

/// The uuid5 of `namespace` (16 bytes) and `site_id|anon|message_id`, as text: a session's id, from
/// the event that opens it (`journey_builder.core.session_id_for`, which does the same in Python where
/// this is not built; ~0.3 against ~1.1 us, a third of a time-ordered batch's events opening one).
#[pyfunction]
fn session_id(namespace: &[u8], site_id: &str, anon: &str, message_id: &str) -> PyResult<String> {
    let namespace = uuid::Uuid::from_slice(namespace)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("namespace: {e}")))?;
    let mut name = Vec::with_capacity(site_id.len() + anon.len() + message_id.len() + 2);
    for (i, part) in [site_id, anon, message_id].iter().enumerate() {
        if i > 0 {
            name.push(b'|');
        }
        name.extend_from_slice(part.as_bytes());
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Ok(uuid::Uuid::new_v5(&namespace, &name).hyphenated().encode_lower(&mut text).to_owned())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_runs, m)?)?;
    m.add_function(wrap_pyfunction!(columns, m)?)?;
    m.add_function(wrap_pyfunction!(session_id, m)?)?;
    m.add_class::<RecordTexts>()?;
    m.add_class::<funnel::FunnelRows>()?;
    m.add_class::<attribution::AttributionRows>()?;
    Ok(())
}
