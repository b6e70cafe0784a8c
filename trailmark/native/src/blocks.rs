//! ClickHouse's Native format as a query streams it out (`Storage.native_blocks`): blocks of
//! columns, each a header (columns, rows) and each column its name, its type and its values. chDB
//! gives whole blocks; a server's HTTP chunks may cut them anywhere (`take_blocks` keeps the rest).
//! Also the shared devices' map that the funnel and attribution read first (`SharedDevices`), and
//! the last step of both counters' counting sorts (`sort_slots`).

use rustc_hash::FxHashMap;

/// Reading a Native block: `Incomplete` when the bytes stop inside it.
pub(crate) enum Cut {
    Incomplete,
    Bad(String),
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    pub(crate) fn varint(&mut self) -> Result<u64, Cut> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.at).ok_or(Cut::Incomplete)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Cut::Bad("a varint longer than 64 bits".into()))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Cut> {
        let end = self.at.checked_add(n).ok_or(Cut::Incomplete)?;
        let out = self.buf.get(self.at..end).ok_or(Cut::Incomplete)?;
        self.at = end;
        Ok(out)
    }

    pub(crate) fn text(&mut self) -> Result<&'a [u8], Cut> {
        let n = self.varint()?;
        self.bytes(usize::try_from(n).map_err(|_| Cut::Incomplete)?)
    }

    /// one column's header (name, type), its type checked against `want`
    pub(crate) fn column(&mut self, want: &str) -> Result<(), Cut> {
        self.text()?;
        let kind = self.text()?;
        if kind != want.as_bytes() {
            return Err(Cut::Bad(format!(
                "a column of type {} where {want} was expected",
                String::from_utf8_lossy(kind)
            )));
        }
        Ok(())
    }

    /// A block's header: its rows, its columns checked to be `columns`.
    pub(crate) fn block(&mut self, columns: u64) -> Result<usize, Cut> {
        let found = self.varint()?;
        let rows = usize::try_from(self.varint()?).map_err(|_| Cut::Bad("rows".into()))?;
        if found != columns {
            return Err(Cut::Bad(format!(
                "{found} columns where {columns} were expected"
            )));
        }
        Ok(rows)
    }

    /// A column of `rows` values of `kind`, `width` bytes each.
    pub(crate) fn values(
        &mut self,
        rows: usize,
        kind: &str,
        width: usize,
    ) -> Result<&'a [u8], Cut> {
        self.column(kind)?;
        self.fixed(rows, width)
    }

    pub(crate) fn fixed(&mut self, rows: usize, width: usize) -> Result<&'a [u8], Cut> {
        self.bytes(rows.checked_mul(width).ok_or(Cut::Incomplete)?)
    }
}

pub(crate) fn u64_at(col: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(col[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

/// Every whole block of `pending` followed by `data`, each read by `read` (which returns the bytes
/// it took, or `Cut::Incomplete` where the bytes stop inside a block); what is not a whole block
/// yet is left in `pending` for the next call. The error of a block `read` cannot read.
pub(crate) fn take_blocks(
    pending: &mut Vec<u8>,
    data: &[u8],
    mut read: impl FnMut(&[u8]) -> Result<usize, Cut>,
) -> Result<(), String> {
    let mut buf = std::mem::take(pending);
    let whole: &[u8] = if buf.is_empty() {
        data
    } else {
        buf.extend_from_slice(data);
        &buf
    };
    let mut at = 0;
    while at < whole.len() {
        match read(&whole[at..]) {
            Ok(n) => at += n,
            Err(Cut::Incomplete) => break,
            Err(Cut::Bad(why)) => return Err(why),
        }
    }
    let rest = whole[at..].to_vec();
    buf.clear();
    *pending = if rest.is_empty() { buf } else { rest };
    Ok(())
}

/// the shared devices' guard: one bit per value of a device hash's low bits (512 KiB)
const GUARD_BITS: u32 = 22;

/// The devices that count as their contact (`analytics._shared_map`), read from blocks of (device
/// UInt64, contact UInt64); every other device is a group of its own. A bit per value of a device
/// hash's low bits guards the map: most devices are not in it and skip the lookup.
pub(crate) struct SharedDevices {
    map: FxHashMap<u64, u64>,
    guard: Vec<u64>,
}

impl Default for SharedDevices {
    fn default() -> Self {
        SharedDevices {
            map: FxHashMap::default(),
            guard: vec![0; 1 << (GUARD_BITS - 6)],
        }
    }
}

impl SharedDevices {
    /// The group of `device`: its contact's hash, or itself.
    pub(crate) fn group(&self, device: u64) -> u64 {
        let bit = device & ((1 << GUARD_BITS) - 1);
        if self.guard[(bit >> 6) as usize] & (1 << (bit & 63)) == 0 {
            return device;
        }
        self.map.get(&device).copied().unwrap_or(device)
    }

    /// One block of (device, contact) pairs. Returns the bytes it took.
    pub(crate) fn block(&mut self, buf: &[u8]) -> Result<usize, Cut> {
        let mut r = Reader::new(buf);
        let rows = r.block(2)?;
        let devices = r.values(rows, "UInt64", 8)?;
        let contacts = r.values(rows, "UInt64", 8)?;
        for i in 0..rows {
            let device = u64_at(devices, i);
            let bit = device & ((1 << GUARD_BITS) - 1);
            self.guard[(bit >> 6) as usize] |= 1 << (bit & 63);
            self.map.insert(device, u64_at(contacts, i));
        }
        Ok(r.at)
    }
}

/// The last step of a counting sort: each slot of `rows` (slot k ends at `ends[k]`, the first
/// starts at 0) sorted, by `sort_unstable` when it holds more than `small` rows, else by insertion
/// (a slot holds one group's rows, or a few groups').
pub(crate) fn sort_slots<T: Ord + Copy>(rows: &mut [T], ends: &[usize], small: usize) {
    let mut from = 0;
    for &to in ends {
        let part = &mut rows[from..to];
        if part.len() > small {
            part.sort_unstable();
        } else {
            for i in 1..part.len() {
                let row = part[i];
                let mut j = i;
                while j > 0 && part[j - 1] > row {
                    part[j] = part[j - 1];
                    j -= 1;
                }
                part[j] = row;
            }
        }
        from = to;
    }
}
