//! Enriched run records read into events, for the Kafka journey builder (trailmark/runtime.py,
//! `parse_enriched`).
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
//! What it does not read exactly as orjson and `parse_enriched` do, it leaves to them: a record that
//! is not exactly a run, names that are not distinct strings, a row that is not a list of as many
//! values, a string it cannot decode, a number that is no 64-bit integer or plain float, come back
//! as None and the record is read by Python; a list or an object value is read by the `loads` it is
//! given (orjson's).

use rustc_hash::FxHashMap;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
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

fn layout<'a>(py: Python<'_>, fields: &str) -> Option<Layout<'a>> {
    let names: Vec<String> = serde_json::from_str(fields).ok()?;
    let mut distinct = std::collections::HashSet::with_capacity(names.len());
    if !names.iter().all(|n| distinct.insert(n.as_str())) {
        return None;
    }
    let errors = names.iter().position(|n| n == "enrich_errors");
    let seen = names.iter().map(|_| Seen::default()).collect();
    let names: Vec<Py<PyString>> = names.iter().map(|n| PyString::intern(py, n).unbind()).collect();
    let template = PyDict::new(py);
    for name in &names {
        template.set_item(name.bind(py), py.None()).ok()?;
    }
    Some(Layout { names, errors, seen, template: template.unbind() })
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
        let inner = &raw[1..raw.len() - 1];
        if inner.contains('\\') {
            let text: String = serde_json::from_str(raw).ok()?;
            PyString::new(py, &text).into_any()
        } else {
            PyString::new(py, inner).into_any()
        }
    } else if raw.contains(['.', 'e', 'E']) {
        let f: f64 = raw.parse().ok()?;
        if !f.is_finite() {
            return None; // orjson's answer for an overflowing float is its own
        }
        f.into_pyobject(py).ok()?.into_any()
    } else if let Ok(i) = raw.parse::<i64>() {
        i.into_pyobject(py).ok()?.into_any()
    } else {
        raw.parse::<u64>().ok()?.into_pyobject(py).ok()?.into_any()
    };
    if keep {
        seen.values.insert(raw, v.clone().unbind());
    }
    Some(v)
}

/// The events of one record, or None (see the module's text). `last` is the layout of the record
/// before (most records of a batch share one: comparing their names' text is cheaper than hashing it).
fn read_run<'py, 'a>(
    py: Python<'py>,
    record: &'a [u8],
    layouts: &mut Vec<(&'a str, Layout<'a>)>,
    last: &mut usize,
    loads: &Bound<'py, PyAny>,
    events: &mut Vec<Bound<'py, PyDict>>,
) -> Option<()> {
    let text = std::str::from_utf8(record).ok()?;
    let run: Run<'a> = serde_json::from_str(text).ok()?;
    let fields = run.fields.get();
    if layouts.get(*last).map(|(f, _)| *f != fields).unwrap_or(true) {
        *last = match layouts.iter().position(|(f, _)| *f == fields) {
            Some(at) => at,
            None => {
                if layouts.len() >= LAYOUTS_MAX {
                    return None;
                }
                layouts.push((fields, layout(py, fields)?));
                layouts.len() - 1
            }
        };
    }
    let layout = &mut layouts[*last].1;
    for values in run.rows {
        if values.len() != layout.names.len() {
            return None;
        }
        let event = layout.template.bind(py).copy().ok()?;
        for (i, raw) in values.into_iter().enumerate() {
            let raw = raw.get();
            // an empty enrich_errors is an empty tuple, as parse_enriched reads it (see _errors_at)
            let errors = layout.errors == Some(i);
            let v = if errors && raw == "[]" {
                PyTuple::empty(py).into_any()
            } else {
                let v = value(py, raw, &mut layout.seen[i], loads)?;
                if errors && v.downcast::<PyList>().is_ok_and(|l| l.is_empty()) {
                    PyTuple::empty(py).into_any()
                } else {
                    v
                }
            };
            event.set_item(layout.names[i].bind(py), v).ok()?;
        }
        events.push(event);
    }
    Some(())
}

const LAYOUTS_MAX: usize = 64; // distinct field lists in one call; more: Python reads the records

/// The events of `records` (bytes) as dicts, all in one list, and for each record how many of them
/// are its, or -1 when Python must read it. `loads` reads a list or an object value (orjson.loads).
/// One list rather than one per record: a batch's ~17k lists, kept until it is read, would each
/// count towards the cyclic GC's next collection.
#[pyfunction]
fn read_runs<'py>(
    py: Python<'py>,
    records: Vec<Bound<'py, PyBytes>>,
    loads: Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyList>, Vec<isize>)> {
    let mut layouts: Vec<(&str, Layout<'_>)> = Vec::new();
    let mut last = 0;
    let mut events: Vec<Bound<'py, PyDict>> = Vec::with_capacity(records.len() * 2);
    let mut counts = Vec::with_capacity(records.len());
    for record in &records {
        let before = events.len();
        match read_run(py, record.as_bytes(), &mut layouts, &mut last, &loads, &mut events) {
            Some(()) => counts.push((events.len() - before) as isize),
            None => {
                events.truncate(before);
                counts.push(-1);
            }
        }
    }
    Ok((PyList::new(py, events)?, counts))
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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_runs, m)?)?;
    m.add_function(wrap_pyfunction!(columns, m)?)?;
    Ok(())
}
