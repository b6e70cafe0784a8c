//! Attribution's credits, counted as `journey_builder.analytics._per_conversion` counts them in
//! ClickHouse, from the rows a query streams out in ClickHouse's Native format
//! (`journey_builder.analytics.attribution`).
//!
//! Why here: at 10M events the rows are 0.9M (the conversions and the session touches of the
//! converting contacts), but grouping them by contact in ClickHouse (`groupArray` of 200k groups,
//! then arrays per conversion) took 0.2-0.3 s of CPU beyond reading them, of a read's 0.6 s.
//! Here each row is 24 bytes, kept as it comes in one of 256 buckets by its group's hash (in
//! segments of 64 KiB that never move: growing one vector per bucket by copying cost 60 ms more
//! at 100M events); each bucket is sorted (`sort_rows`) and its groups walked once.
//!
//! What it is given (`AttributionRows`):
//! - `shared`: blocks of (device UInt64, contact UInt64): the devices that count as their contact
//!   (`analytics._shared_map`); every other device is a group of its own.
//! - `feed`: blocks of (device UInt64, ms Int64, session UInt64, flags UInt8, k UInt64),
//!   `analytics._counted_rows`: a row's time in ms since 1970, its session's hash (0 for a
//!   conversion), its flags (2: a conversion, 1: a direct touch) and `k`, a touch's key hash or a
//!   conversion's message hash. Each is kept as `analytics._packed_time` packs it: `t`, its time in
//!   ms since 1900 times 2^20, plus 18 bits of its session times 4, plus its flags.
//!
//! The credits (`credit`): a group's rows in order of (t, k), a row there twice counted once (as
//! `arrayCompact(arraySort(...))`); each conversion at `at` (seconds) credits the group's touches
//! in [at - lookback, at + 0.001] (none: one direct touch of key `EMPTY` at `at`) by the model's
//! weights (`journey_builder.attribution.weights`), and counts once for the key of its first touch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rustc_hash::FxHashMap;

use crate::blocks::{sort_slots, take_blocks, u64_at, Cut, Reader, SharedDevices};

const BUCKET_BITS: u32 = 8;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// rows in one segment of a bucket: 64 KiB
const SEGMENT: usize = 2730;
const MS_BEFORE_1970: i64 = 2_208_988_800_000;
/// ms since 1900 in the 44 bits above a row's session bits and flags
const MAX_MS: i64 = (1 << 44) - 1;
/// a session hash's bits kept in `t`
const SESSION_BITS: u64 = (1 << 18) - 1;
/// ClickHouse's `cityHash64('')`: the key of a conversion with no touch in its window
pub const EMPTY: u64 = 11_160_318_154_034_397_263;
const CONVERSION: u64 = 2;
const DIRECT: u64 = 1;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    group: u64,
    t: u64,
    k: u64,
}

#[derive(Clone, Copy)]
enum Model {
    FirstTouch,
    LastTouch,
    LastNonDirect,
    Linear,
    TimeDecay,
    PositionBased,
}

impl Model {
    fn named(name: &str) -> Option<Model> {
        Some(match name {
            "first_touch" => Model::FirstTouch,
            "last_touch" => Model::LastTouch,
            "last_non_direct" => Model::LastNonDirect,
            "linear" => Model::Linear,
            "time_decay" => Model::TimeDecay,
            "position_based" => Model::PositionBased,
            _ => return None,
        })
    }
}

/// A touch in a group: its time in seconds since 1970 (as `analytics._unpacked_s` makes it),
/// whether it is direct, its key.
#[derive(Clone, Copy)]
struct Touch {
    at: f64,
    direct: bool,
    key: u64,
}

/// Seconds since 1970 of a packed `t`, the same f64 as ClickHouse's
/// `toFloat64(toInt64(intDiv(t, 1048576)) - ms before 1970) / 1000`.
fn seconds(t: u64) -> f64 {
    ((t >> 20) as i64 - MS_BEFORE_1970) as f64 / 1000.0
}

/// What a thread counts: per key, its credit and the conversions whose first touch it is.
type Credits = FxHashMap<u64, (f64, u64)>;

/// The walk's settings.
struct Walk {
    model: Model,
    lookback_s: f64,
    half_life_s: f64,
}

impl Walk {
    /// One conversion at `at` over its group's touches (in order): credited into `credits`.
    /// Returns how many touches it credited.
    fn conversion(
        &self,
        at: f64,
        touches: &[Touch],
        decay: &mut Vec<f64>,
        credits: &mut Credits,
    ) -> usize {
        let lo = touches.partition_point(|x| x.at < at - self.lookback_s);
        let hi = touches.partition_point(|x| x.at <= at + 0.001);
        let none = [Touch {
            at,
            direct: true,
            key: EMPTY,
        }];
        let win = if lo < hi { &touches[lo..hi] } else { &none[..] };
        let n = win.len();
        credits.entry(win[0].key).or_insert((0.0, 0)).1 += 1;
        let mut add = |i: usize, w: f64| credits.entry(win[i].key).or_insert((0.0, 0)).0 += w;
        match self.model {
            Model::FirstTouch => add(0, 1.0),
            Model::LastTouch => add(n - 1, 1.0),
            Model::LastNonDirect => add(win.iter().rposition(|x| !x.direct).unwrap_or(n - 1), 1.0),
            Model::Linear => {
                for i in 0..n {
                    add(i, 1.0 / n as f64);
                }
            }
            Model::TimeDecay => {
                decay.clear();
                decay.extend(
                    win.iter()
                        .map(|x| 2f64.powf(-(at - x.at).max(0.0) / self.half_life_s)),
                );
                let total: f64 = decay.iter().sum();
                for (i, r) in decay.iter().enumerate() {
                    add(i, r / total);
                }
            }
            Model::PositionBased => match n {
                1 => add(0, 1.0),
                2 => {
                    add(0, 0.5);
                    add(1, 0.5);
                }
                _ => {
                    add(0, 0.4);
                    for i in 1..n - 1 {
                        add(i, 0.2 / (n - 2) as f64);
                    }
                    add(n - 1, 0.4);
                }
            },
        }
        n
    }

    /// Every group of one bucket (its rows sorted). False when `stop` was set (the deadline
    /// passed: looked at as the bucket starts, every 1,024 groups and every million touches
    /// credited, since one contact's conversions may each credit many touches).
    fn bucket(
        &self,
        rows: &[Row],
        credits: &mut Credits,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> bool {
        let late = || {
            let late = stop.load(Ordering::Relaxed) || Instant::now() >= deadline;
            if late {
                stop.store(true, Ordering::Relaxed);
            }
            late
        };
        let (mut touches, mut conversions, mut decay) = (Vec::new(), Vec::new(), Vec::new());
        let mut i = 0;
        let mut groups = 0u32;
        let mut work = 0usize;
        while i < rows.len() {
            if groups % 1024 == 0 && late() {
                return false;
            }
            groups = groups.wrapping_add(1);
            let group = rows[i].group;
            touches.clear();
            conversions.clear();
            let mut last: Option<(u64, u64)> = None;
            while i < rows.len() && rows[i].group == group {
                let r = rows[i];
                i += 1;
                if last == Some((r.t, r.k)) {
                    continue; // stored twice: once
                }
                last = Some((r.t, r.k));
                if r.t & CONVERSION != 0 {
                    conversions.push(seconds(r.t));
                } else {
                    touches.push(Touch {
                        at: seconds(r.t),
                        direct: r.t & DIRECT != 0,
                        key: r.k,
                    });
                }
            }
            for &at in &conversions {
                work += self.conversion(at, &touches, &mut decay, credits);
                if work >= 1 << 20 {
                    work = 0;
                    if late() {
                        return false;
                    }
                }
            }
        }
        true
    }
}

#[pyclass(module = "trailmark._native")]
pub struct AttributionRows {
    shared: SharedDevices,
    /// each bucket's rows, in segments
    buckets: Vec<Vec<Vec<Row>>>,
    pending: Vec<u8>,
    rows: usize,
    max_rows: usize,
}

/// What the Native bytes given are rows of.
#[derive(Clone, Copy)]
enum Blocks {
    Shared,
    Rows,
}

impl AttributionRows {
    /// One block of (device, ms, session, flags, k) rows. Returns the bytes it took.
    fn rows_block(&mut self, buf: &[u8]) -> Result<usize, Cut> {
        let mut r = Reader::new(buf);
        let rows = r.block(5)?;
        let devices = r.values(rows, "UInt64", 8)?;
        let times = r.values(rows, "Int64", 8)?;
        let sessions = r.values(rows, "UInt64", 8)?;
        let flags = r.values(rows, "UInt8", 1)?;
        let keys = r.values(rows, "UInt64", 8)?;
        // the whole block is here: keep its rows
        self.rows += rows;
        if self.rows > self.max_rows {
            return Err(Cut::Bad(format!("more than {} rows", self.max_rows)));
        }
        for i in 0..rows {
            let group = self.shared.group(u64_at(devices, i));
            let ms = (u64_at(times, i) as i64).saturating_add(MS_BEFORE_1970);
            let t = (ms.clamp(0, MAX_MS) as u64) << 20
                | (u64_at(sessions, i) & SESSION_BITS) << 2
                | u64::from(flags[i] & 3);
            let segments = &mut self.buckets[(group >> (64 - BUCKET_BITS)) as usize];
            match segments.last_mut() {
                Some(tail) if tail.len() < tail.capacity() => tail.push(Row {
                    group,
                    t,
                    k: u64_at(keys, i),
                }),
                _ => {
                    let mut tail = Vec::with_capacity(SEGMENT);
                    tail.push(Row {
                        group,
                        t,
                        k: u64_at(keys, i),
                    });
                    segments.push(tail);
                }
            }
        }
        Ok(r.at)
    }

    fn take(&mut self, data: &[u8], blocks: Blocks) -> PyResult<()> {
        let mut pending = std::mem::take(&mut self.pending);
        let read = take_blocks(&mut pending, data, |block| match blocks {
            Blocks::Shared => self.shared.block(block),
            Blocks::Rows => self.rows_block(block),
        });
        self.pending = pending;
        read.map_err(|why| PyValueError::new_err(format!("attribution rows: {why}")))
    }
}

#[pymethods]
impl AttributionRows {
    /// At most `max_rows` rows are kept (more: ValueError).
    #[new]
    fn new(max_rows: usize) -> Self {
        AttributionRows {
            shared: SharedDevices::default(),
            buckets: vec![Vec::new(); BUCKETS],
            pending: Vec::new(),
            rows: 0,
            max_rows,
        }
    }

    /// Native bytes of (device UInt64, contact UInt64): devices counted as their contact.
    fn shared(&mut self, data: &[u8]) -> PyResult<()> {
        self.take(data, Blocks::Shared)
    }

    /// Native bytes of (device UInt64, ms Int64, session UInt64, flags UInt8, k UInt64) rows (see the
    /// module's text).
    fn feed(&mut self, data: &[u8]) -> PyResult<()> {
        self.take(data, Blocks::Rows)
    }

    /// How many rows it holds.
    #[getter]
    fn rows(&self) -> usize {
        self.rows
    }

    /// (key, credit, conversions) of every key credited or first in a conversion's touches, by
    /// `model` with a lookback and a half-life in seconds, on up to `threads` threads (the GIL
    /// released); TimeoutError past `limit_s` seconds. The rows are used up.
    fn credit(
        &mut self,
        py: Python<'_>,
        model: &str,
        lookback_s: f64,
        half_life_s: f64,
        threads: usize,
        limit_s: f64,
    ) -> PyResult<Vec<(u64, f64, u64)>> {
        let model = Model::named(model)
            .ok_or_else(|| PyValueError::new_err(format!("unknown attribution model {model:?}")))?;
        if !self.pending.is_empty() {
            return Err(PyValueError::new_err(
                "attribution rows: the bytes end inside a block",
            ));
        }
        if !(half_life_s > 0.0 && lookback_s >= 0.0) {
            return Err(PyValueError::new_err(
                "attribution: a half-life above 0 and a lookback of 0 or more",
            ));
        }
        let walk = Walk {
            model,
            lookback_s,
            half_life_s,
        };
        let deadline = Instant::now() + Duration::from_secs_f64(limit_s.clamp(0.0, 86_400.0));
        let buckets = std::mem::replace(&mut self.buckets, vec![Vec::new(); BUCKETS]);
        self.rows = 0;
        let threads = threads.clamp(1, 16);
        let stop = AtomicBool::new(false);
        let states: Vec<Credits> = py.allow_threads(|| {
            let mut shares: Vec<Vec<Vec<Vec<Row>>>> = (0..threads).map(|_| Vec::new()).collect();
            for (b, rows) in buckets.into_iter().enumerate() {
                shares[b % threads].push(rows);
            }
            let (walk, stop) = (&walk, &stop);
            std::thread::scope(|scope| {
                let workers: Vec<_> = shares
                    .into_iter()
                    .map(|share| {
                        scope.spawn(move || {
                            let mut credits = Credits::default();
                            let (mut scratch, mut slots) = (Vec::new(), Vec::new());
                            for segments in share {
                                let rows = sort_rows(&segments, &mut scratch, &mut slots);
                                if !walk.bucket(rows, &mut credits, deadline, stop) {
                                    break;
                                }
                            }
                            credits
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("an attribution thread panicked"))
                    .collect()
            })
        });
        if stop.load(Ordering::Relaxed) {
            return Err(pyo3::exceptions::PyTimeoutError::new_err(format!(
                "attribution: longer than {limit_s} s"
            )));
        }
        let mut merged = Credits::default();
        for credits in states {
            for (key, (credit, conversions)) in credits {
                let total = merged.entry(key).or_insert((0.0, 0));
                total.0 += credit;
                total.1 += conversions;
            }
        }
        let mut out: Vec<(u64, f64, u64)> =
            merged.into_iter().map(|(k, (c, n))| (k, c, n)).collect();
        out.sort_unstable_by_key(|x| x.0);
        Ok(out)
    }
}

/// One bucket's rows (its segments) sorted, in `scratch`: by the next bits of their group's hash
/// into about as many slots as rows (a counting sort), then each slot's few rows by compares. At
/// 100M events (8.8M rows) 0.2 s less wall time than `sort_unstable` on the bucket.
fn sort_rows<'a>(
    segments: &[Vec<Row>],
    scratch: &'a mut Vec<Row>,
    slots: &mut Vec<usize>,
) -> &'a [Row] {
    let n: usize = segments.iter().map(Vec::len).sum();
    scratch.clear();
    if n < 64 {
        for segment in segments {
            scratch.extend_from_slice(segment);
        }
        scratch.sort_unstable();
        return scratch;
    }
    let bits = (usize::BITS - n.leading_zeros() - 1).min(16);
    let shift = 64 - BUCKET_BITS - bits;
    let slot = |row: &Row| ((row.group >> shift) as usize) & ((1 << bits) - 1);
    slots.clear();
    slots.resize((1 << bits) + 1, 0);
    for segment in segments {
        for row in segment {
            slots[slot(row) + 1] += 1;
        }
    }
    for k in 0..(1 << bits) {
        slots[k + 1] += slots[k];
    }
    scratch.resize(
        n,
        Row {
            group: 0,
            t: 0,
            k: 0,
        },
    );
    for segment in segments {
        for row in segment {
            let k = slot(row);
            scratch[slots[k]] = *row;
            slots[k] += 1;
        }
    }
    // slots[k] is now where slot k ends
    sort_slots(scratch, &slots[..1 << bits], 16);
    scratch
}
