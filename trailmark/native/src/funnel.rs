//! Funnel levels, as ClickHouse's `windowFunnel(window)(toDateTime(timestamp), step1, ...)` counts
//! them in its default mode, computed from the step rows a query streams out in ClickHouse's Native
//! format (`journey_builder.analytics.funnel`).
//!
//! Why here: at 100M events a funnel of 4 steps reads 34M step rows of 14M devices, and ClickHouse's
//! `windowFunnel` keeps a list of events per group in a hash table of 14M groups: ~5.5 s of CPU
//! beyond reading the rows, past 3 s of wall time on 2 cores. Here each row is 16 bytes (a u128:
//! group, time, steps), kept as it comes in one of 64 parts by the top bits of its group's hash;
//! when counted, each part's rows are moved into its 64 buckets (4,096 in all), each bucket is
//! sorted by (group, time) while it fits in the core's cache, and each group's rows are walked
//! once, with one timestamp per step.
//!
//! What it is given (`FunnelRows`):
//! - `shared`: blocks of (device UInt64, contact UInt64): the devices that count as their contact
//!   (`analytics._shared_map`); every other device is a group of its own.
//! - `feed`: blocks of (device UInt64, ms Int64, mask UInt8/UInt16/UInt32): a step row's device
//!   hash, its time in ms since 1970, and which of the funnel's conditions it meets (bit i: step
//!   i + 1). Bytes may come cut anywhere (a server's HTTP chunks): what is not a whole block yet is
//!   kept.
//!
//! The levels (`levels`): for each group, its rows in time order (ms; a row meeting several
//! conditions takes them first step first, as `windowFunnel` does: one view of a page that is two
//! steps of the funnel makes both); step 1 starts a chain at the row's second, step k + 1
//! continues the chain of step k if the row's second is at most `window` seconds after that
//! chain's start. The level is the deepest step any chain reached. Where `windowFunnel` takes rows
//! of the same second in the order it read them, this takes them in the order of their
//! milliseconds (the same ms: the rows of earlier steps first, as within one row). Groups at level
//! 0 are not counted.
//!
//! By channel (`by_channel`), `levels` keeps the groups it counted (ascending, with their levels:
//! 9 MB a million), then `arrivals` reads blocks of (device UInt64, ms Int64, channel String), the
//! funnel's arrivals from a channel, and keeps those in the buckets of counted groups as rows (16
//! bytes each, like the steps'); `channels` sorts them by bucket as `levels` sorts the steps and
//! merges each bucket's with its groups: a group's first arrival (by ms; the same ms: the channel
//! seen first) is its channel, "" for none. Looking each arrival up as it came cost ~0.5 us (a
//! few cache misses into the groups), 20 s for the 35M arrivals of 100M events.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rustc_hash::FxHashMap;

use crate::blocks::{sort_slots, take_blocks, u64_at, Cut, Reader, SharedDevices};

const BUCKET_BITS: u32 = 12;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// a row's time as ms since 1900-01-01 (DateTime64's first day) in the 44 bits above its payload
const MS_BEFORE_1970: i64 = 2_208_988_800_000;
const PAYLOAD_BITS: u32 = 20;
const PAYLOAD: u64 = (1 << PAYLOAD_BITS) - 1;
const MAX_MS: i64 = (1 << (64 - PAYLOAD_BITS)) - 1;
/// steps: bits of the mask (`analytics.funnel` takes at most 20)
pub const MAX_STEPS: usize = PAYLOAD_BITS as usize;
const NONE: u64 = u64::MAX;

#[pyclass(module = "trailmark._native")]
pub struct FunnelRows {
    steps: usize,
    window_s: u64,
    shared: SharedDevices,
    /// each step row: group << 64 | ms since 1900 << 20 | mask
    events: Rows,
    /// by channel: after `levels`, the groups at level 1 or more (ascending), their levels and
    /// where each bucket starts among them; `events` then holds the arrivals of those groups
    /// (group << 64 | ms since 1900 << 20 | channel code)
    by_channel: bool,
    found: Vec<u64>,
    found_levels: Vec<u8>,
    found_starts: Vec<usize>,
    channels: Vec<String>,
    codes: FxHashMap<Vec<u8>, u64>,
    pending: Vec<u8>,
    rows: usize,
    max_rows: usize,
}

/// What the Native bytes given are rows of.
#[derive(Clone, Copy)]
enum Blocks {
    Shared,
    Steps,
    Arrivals,
}

fn bucket(row: u128) -> usize {
    (row >> (128 - BUCKET_BITS)) as usize
}

/// The first split of the rows as they come: 64 parts by the top bits of their group (a part of the
/// 34M rows of 100M events is 8.6 MB, in the large shared cache when its buckets are made). Keeping
/// a row writes to one of 64 places, each a sequence; writing each straight to one of the 4,096
/// buckets cost a TLB miss a row, and with 16 parts a part was 34 MB.
const PART_BITS: u32 = 6;
const PARTS: usize = 1 << PART_BITS;
/// Rows in one segment of a part: 64 KiB, under the allocator's threshold for a mapping of its own
/// (segments of 256 KiB were each mapped and unmapped again: 0.2 s of CPU more at 34M rows).
const SEGMENT: usize = 1 << 12;

fn part(row: u128) -> usize {
    (row >> (128 - PART_BITS)) as usize
}

/// Rows kept as they come: in 64 parts (`part`), each a list of segments that never move (no vector
/// grows by copying), with a count of each bucket's rows, so that counting them later moves each
/// row once, from its part into its bucket, part by part. Against one vector of all rows moved into
/// 4,096 buckets at once (before 2026-12-07's evening): 0.4-0.5 s of CPU less to count 34M rows,
/// ~0.1 s more to keep them, and no second copy of them all (a read of 100M events peaked at 0.99 GB
/// instead of 1.44 GB).
struct Rows {
    /// each part's segment being filled
    tails: Vec<Vec<u128>>,
    /// each part's full segments
    full: Vec<Vec<Vec<u128>>>,
    /// each bucket's rows
    sizes: Vec<usize>,
}

impl Default for Rows {
    fn default() -> Self {
        Rows {
            tails: vec![Vec::new(); PARTS],
            full: vec![Vec::new(); PARTS],
            sizes: vec![0; BUCKETS],
        }
    }
}

impl Rows {
    fn push(&mut self, row: u128) {
        self.sizes[bucket(row)] += 1;
        let p = part(row);
        let tail = &mut self.tails[p];
        if tail.len() == tail.capacity() {
            let done = std::mem::replace(tail, Vec::with_capacity(SEGMENT));
            if !done.is_empty() {
                self.full[p].push(done);
            }
        }
        tail.push(row);
    }

    /// Each part's segments, in order.
    fn into_parts(self) -> (Vec<Vec<Vec<u128>>>, Vec<usize>) {
        let parts = self
            .full
            .into_iter()
            .zip(self.tails)
            .map(|(mut segments, tail)| {
                segments.push(tail);
                segments
            })
            .collect();
        (parts, self.sizes)
    }
}

/// Each bucket's rows sorted, given to `each` with the thread's state (`make`), on `threads`
/// threads, each taking whole parts (about as many rows each, in order): a part's rows moved into
/// its buckets in a space of the thread's own, reused from part to part, then each bucket sorted
/// there. The threads' states, in the order of their buckets.
fn by_buckets<T: Send>(
    rows: Rows,
    threads: usize,
    make: impl Fn() -> T + Sync,
    each: impl Fn(&mut T, usize, &[u128]) + Sync,
) -> Vec<T> {
    let (parts, sizes) = rows.into_parts();
    let per_part = BUCKETS / PARTS;
    let part_rows: Vec<usize> = sizes.chunks(per_part).map(|c| c.iter().sum()).collect();
    let total: usize = part_rows.iter().sum();
    let per = total.div_ceil(threads).max(1);
    let mut shares: Vec<Vec<(usize, Vec<Vec<u128>>)>> = vec![Vec::new()];
    let mut taken = 0;
    for (p, segments) in parts.into_iter().enumerate() {
        if taken >= per && shares.len() < threads {
            shares.push(Vec::new());
            taken = 0;
        }
        taken += part_rows[p];
        shares.last_mut().expect("a share").push((p, segments));
    }
    let (sizes, make, each) = (&sizes, &make, &each);
    std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || {
                    let mut state = make();
                    let (mut space, mut scratch, mut slots) = (Vec::new(), Vec::new(), Vec::new());
                    for (p, segments) in share {
                        let first = p * per_part;
                        let mut starts = vec![0usize; per_part + 1];
                        for b in 0..per_part {
                            starts[b + 1] = starts[b] + sizes[first + b];
                        }
                        if space.len() < starts[per_part] {
                            space.resize(starts[per_part], 0u128);
                        }
                        let mut next = starts.clone();
                        for segment in segments {
                            for row in segment {
                                let b = bucket(row) - first;
                                space[next[b]] = row;
                                next[b] += 1;
                            }
                        }
                        for b in 0..per_part {
                            let rows = &mut space[starts[b]..starts[b + 1]];
                            let sorted = sort_bucket(rows, &mut scratch, &mut slots);
                            each(&mut state, first + b, sorted);
                        }
                    }
                    state
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a funnel thread panicked"))
            .collect()
    })
}

impl FunnelRows {
    /// Keeps a row of `group` at the time of row `i` of `times` (ms since 1970), with `payload` (a
    /// step mask or a channel code): at most `max_rows` of them.
    fn keep(&mut self, group: u64, times: &[u8], i: usize, payload: u64) -> Result<(), Cut> {
        self.rows += 1;
        if self.rows > self.max_rows {
            return Err(Cut::Bad(format!("more than {} rows", self.max_rows)));
        }
        let ms = u64_at(times, i) as i64;
        let at = ms.saturating_add(MS_BEFORE_1970).clamp(0, MAX_MS) as u64;
        self.events
            .push(u128::from(group) << 64 | u128::from(at << PAYLOAD_BITS | payload));
        Ok(())
    }

    /// One block of step rows. Returns the bytes it took.
    fn rows_block(&mut self, buf: &[u8]) -> Result<usize, Cut> {
        let mut r = Reader::new(buf);
        let rows = r.block(3)?;
        let devices = r.values(rows, "UInt64", 8)?;
        let times = r.values(rows, "Int64", 8)?;
        r.text()?;
        let width = match r.text()? {
            b"UInt8" => 1,
            b"UInt16" => 2,
            b"UInt32" => 4,
            other => {
                let kind = String::from_utf8_lossy(other);
                return Err(Cut::Bad(format!("a mask column of type {kind}")));
            }
        };
        let masks = r.fixed(rows, width)?;
        // the whole block is here: keep its rows
        for i in 0..rows {
            let mask = masks[i * width..i * width + width]
                .iter()
                .rev()
                .fold(0u64, |m, &b| m << 8 | u64::from(b));
            if mask == 0 {
                continue;
            }
            if mask >> self.steps != 0 {
                return Err(Cut::Bad(format!(
                    "a step mask of {mask:#x} for {} steps",
                    self.steps
                )));
            }
            let group = self.shared.group(u64_at(devices, i));
            self.keep(group, times, i, mask)?;
        }
        Ok(r.at)
    }

    /// One block of arrivals (device UInt64, ms Int64, channel String): those of groups `levels`
    /// counted are kept. Returns the bytes it took.
    fn arrivals_block(&mut self, buf: &[u8]) -> Result<usize, Cut> {
        let mut r = Reader::new(buf);
        let rows = r.block(3)?;
        let devices = r.values(rows, "UInt64", 8)?;
        let times = r.values(rows, "Int64", 8)?;
        r.column("String")?;
        let mut names = Vec::with_capacity(rows);
        for _ in 0..rows {
            names.push(r.text()?);
        }
        // the whole block is here (a channel's rows come together: its code is looked up once)
        let mut last: (&[u8], u64) = (&[], 0);
        for (i, &name) in names.iter().enumerate() {
            let group = self.shared.group(u64_at(devices, i));
            let b = bucket(u128::from(group) << 64);
            if self.found_starts[b] == self.found_starts[b + 1] {
                continue; // no group of its bucket was counted
            }
            if last.1 == 0 || name != last.0 {
                let code = match self.codes.get(name) {
                    Some(&code) => code,
                    None => {
                        let code = self.channels.len() as u64 + 1;
                        if code > PAYLOAD {
                            return Err(Cut::Bad("more than a million channels".into()));
                        }
                        self.channels
                            .push(String::from_utf8_lossy(name).into_owned());
                        self.codes.insert(name.to_vec(), code);
                        code
                    }
                };
                last = (name, code);
            }
            self.keep(group, times, i, last.1)?;
        }
        Ok(r.at)
    }

    /// Every whole block of `pending` followed by `data`, the rest kept for the next call.
    fn take(&mut self, data: &[u8], blocks: Blocks) -> PyResult<()> {
        let mut pending = std::mem::take(&mut self.pending);
        let read = take_blocks(&mut pending, data, |block| match blocks {
            Blocks::Shared => self.shared.block(block),
            Blocks::Steps => self.rows_block(block),
            Blocks::Arrivals => self.arrivals_block(block),
        });
        self.pending = pending;
        read.map_err(|why| PyValueError::new_err(format!("funnel rows: {why}")))
    }
}

/// `rows` (one bucket's) sorted: by the next bits of their group's hash into about as many slots
/// as rows (a counting sort, through `scratch`), then each slot's few rows in place; a slot of many
/// (one group's rows) by `sort_unstable`. Several times cheaper than sorting the bucket by compares.
/// Returns the rows sorted: `rows` itself when fewer than 64, else `scratch`.
fn sort_bucket<'a>(
    rows: &'a mut [u128],
    scratch: &'a mut Vec<u128>,
    slots: &mut Vec<usize>,
) -> &'a [u128] {
    let n = rows.len();
    if n < 64 {
        rows.sort_unstable();
        return rows;
    }
    let bits = (usize::BITS - n.leading_zeros() - 1).min(16);
    let shift = 128 - BUCKET_BITS - bits;
    let slot = |row: u128| ((row >> shift) as usize) & ((1 << bits) - 1);
    slots.clear();
    slots.resize((1 << bits) + 1, 0);
    for &row in rows.iter() {
        slots[slot(row) + 1] += 1;
    }
    for k in 0..(1 << bits) {
        slots[k + 1] += slots[k];
    }
    scratch.clear();
    scratch.resize(n, 0);
    for &row in rows.iter() {
        let k = slot(row);
        scratch[slots[k]] = row;
        slots[k] += 1;
    }
    // slots[k] is now where slot k ends
    sort_slots(scratch, &slots[..1 << bits], 24);
    scratch
}

/// The level of each group of one sorted bucket, counted by level (`counts[level]`); with
/// `found`, each group at level 1 or more and its level, in the order of the groups.
fn walk(
    events: &[u128],
    steps: usize,
    window_s: u64,
    counts: &mut [u64],
    found: Option<&mut (Vec<u64>, Vec<u8>)>,
) {
    let mut found = found;
    // chains' starts, in seconds since 1900 (a whole number of days before 1970: the seconds of
    // the ms since 1970 as windowFunnel's toDateTime takes them, shifted), NONE for none
    let mut start = [NONE; MAX_STEPS];
    let mut i = 0;
    while i < events.len() {
        let group = (events[i] >> 64) as u64;
        start[..steps].fill(NONE);
        let mut top = 0; // steps reached
        while i < events.len() && (events[i] >> 64) as u64 == group {
            let key = events[i] as u64;
            i += 1;
            if top == steps {
                continue;
            }
            let second = (key >> PAYLOAD_BITS) / 1000;
            let mut mask = key & PAYLOAD;
            while mask != 0 {
                let step = mask.trailing_zeros() as usize; // first step first
                mask &= mask - 1;
                if step == 0 {
                    start[0] = second;
                } else if start[step - 1] != NONE && second <= start[step - 1] + window_s {
                    start[step] = start[step - 1];
                } else {
                    continue;
                }
                top = top.max(step + 1);
            }
        }
        counts[top] += 1;
        if let Some((groups, levels)) = found.as_deref_mut() {
            if top > 0 {
                groups.push(group);
                levels.push(top as u8);
            }
        }
    }
}

#[pymethods]
impl FunnelRows {
    /// A funnel of `steps` conditions (1 to 20) and a window of `window_s` seconds; at most
    /// `max_rows` step rows are kept (more: ValueError); `by_channel`: `levels` keeps the groups it
    /// counts, for `arrivals` and `channels`.
    #[new]
    #[pyo3(signature = (steps, window_s, max_rows, by_channel = false))]
    fn new(steps: usize, window_s: i64, max_rows: usize, by_channel: bool) -> PyResult<Self> {
        if !(1..=MAX_STEPS).contains(&steps) {
            return Err(PyValueError::new_err(format!("steps: 1 to {MAX_STEPS}")));
        }
        Ok(FunnelRows {
            steps,
            window_s: window_s.clamp(0, 1 << 40) as u64,
            shared: SharedDevices::default(),
            events: Rows::default(),
            by_channel,
            found: Vec::new(),
            found_levels: Vec::new(),
            found_starts: Vec::new(),
            channels: Vec::new(),
            codes: FxHashMap::default(),
            pending: Vec::new(),
            rows: 0,
            max_rows,
        })
    }

    /// Native bytes of (device UInt64, contact UInt64): devices counted as their contact.
    fn shared(&mut self, data: &[u8]) -> PyResult<()> {
        self.take(data, Blocks::Shared)
    }

    /// Native bytes of the step rows (see the module's text).
    fn feed(&mut self, data: &[u8]) -> PyResult<()> {
        self.take(data, Blocks::Steps)
    }

    /// How many step rows it holds.
    #[getter]
    fn rows(&self) -> usize {
        self.rows
    }

    /// How many groups reached each level: `[level 0 (not counted: 0), level 1, ..., level steps]`,
    /// on up to `threads` threads (the GIL released). The rows are used up.
    fn levels(&mut self, py: Python<'_>, threads: usize) -> PyResult<Vec<u64>> {
        if !self.pending.is_empty() {
            return Err(PyValueError::new_err(
                "funnel rows: the bytes end inside a block",
            ));
        }
        let (steps, window_s, keep) = (self.steps, self.window_s, self.by_channel);
        let events = std::mem::take(&mut self.events);
        self.rows = 0;
        let threads = threads.clamp(1, 16);
        let states = py.allow_threads(move || {
            by_buckets(
                events,
                threads,
                || {
                    (
                        vec![0u64; steps + 1],
                        keep.then(|| (Vec::new(), Vec::new())),
                    )
                },
                |(counts, found), _, rows| walk(rows, steps, window_s, counts, found.as_mut()),
            )
        });
        let mut counts = vec![0u64; steps + 1];
        let mut found: (Vec<u64>, Vec<u8>) = (Vec::new(), Vec::new());
        for (part, groups) in states {
            for (total, n) in counts.iter_mut().zip(part) {
                *total += n;
            }
            // the threads took the buckets in order: their groups follow one another, ascending
            if let Some((g, l)) = groups {
                found.0.extend(g);
                found.1.extend(l);
            }
        }
        if keep {
            let (groups, levels) = found;
            self.found_starts = (0..=BUCKETS)
                .map(|b| groups.partition_point(|&g| (g >> (64 - BUCKET_BITS)) < b as u64))
                .collect();
            (self.found, self.found_levels) = (groups, levels);
        }
        counts[0] = 0;
        Ok(counts)
    }

    /// Native bytes of (device UInt64, ms Int64, channel String) arrivals, after `levels` of a
    /// funnel by channel: each group counted keeps its first.
    fn arrivals(&mut self, data: &[u8]) -> PyResult<()> {
        if !self.by_channel || self.found_starts.is_empty() {
            return Err(PyValueError::new_err(
                "funnel rows: arrivals come after levels, by channel",
            ));
        }
        self.take(data, Blocks::Arrivals)
    }

    /// (first channel or "" for none, level, groups) of the groups `levels` counted, by channel,
    /// on up to `threads` threads (the GIL released): each bucket's arrivals sorted, then merged
    /// with its groups. The arrivals are used up.
    fn channels(&mut self, py: Python<'_>, threads: usize) -> PyResult<Vec<(String, usize, u64)>> {
        if !self.pending.is_empty() {
            return Err(PyValueError::new_err(
                "funnel rows: the bytes end inside a block",
            ));
        }
        let arrivals = std::mem::take(&mut self.events);
        self.rows = 0;
        let (found, levels, starts) = (&self.found, &self.found_levels, &self.found_starts);
        let states = py.allow_threads(|| {
            by_buckets(
                arrivals,
                threads.clamp(1, 16),
                FxHashMap::default,
                |moved, b, rows| {
                    // rows: (group, ms, code) ascending; a group's first row is its first arrival
                    let groups = &found[starts[b]..starts[b + 1]];
                    let (mut i, mut j) = (0, 0);
                    while i < rows.len() && j < groups.len() {
                        let group = (rows[i] >> 64) as u64;
                        if group < groups[j] {
                            i += 1;
                        } else if group > groups[j] {
                            j += 1;
                        } else {
                            let code = rows[i] as u64 & PAYLOAD;
                            *moved.entry((code, levels[starts[b] + j])).or_insert(0u64) += 1;
                            while i < rows.len() && (rows[i] >> 64) as u64 == group {
                                i += 1;
                            }
                            j += 1;
                        }
                    }
                },
            )
        });
        // every group counted, then those with an arrival moved from "" to their first channel
        let mut counts: FxHashMap<(u64, u8), u64> = FxHashMap::default();
        for &level in levels {
            *counts.entry((0, level)).or_insert(0) += 1;
        }
        for moved in states {
            for ((code, level), n) in moved {
                *counts.entry((0, level)).or_insert(0) -= n;
                *counts.entry((code, level)).or_insert(0) += n;
            }
        }
        counts.retain(|_, n| *n > 0);
        let mut out: Vec<(String, usize, u64)> = counts
            .into_iter()
            .map(|((code, level), n)| {
                let name = if code == 0 {
                    String::new()
                } else {
                    self.channels[code as usize - 1].clone()
                };
                (name, usize::from(level), n)
            })
            .collect();
        out.sort();
        Ok(out)
    }
}
