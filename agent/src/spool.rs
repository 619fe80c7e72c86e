//! The on-disk spool: batches wait here while the broker is unreachable, survive an agent
//! crash, and are replayed in order with their original timestamps once it is back.
//!
//! One append-only file of records `[0xD5][len u32 LE][crc32 u32 LE][payload]` and a small
//! position file naming the offset of the first record not yet sent. On open, records are
//! checked from that offset: a torn or corrupt tail (a crash mid-write) is cut off there,
//! never read as data, and everything before it stays intact. The spool is bounded: when
//! it is full, the oldest records are dropped and counted. Consumed space is reclaimed by
//! rewriting the file once the consumed part outgrows the rest.
//!
//! Syncs are grouped. A record is written at once (it survives the agent's crash: the
//! kernel holds it) and synced to the disk only once it has waited [`SYNC_AFTER`]
//! without the broker acknowledging it; one sync then covers every record written in
//! that time. On a healthy connection the PUBACK comes within milliseconds and a record
//! is never synced. What a power cut can lose is therefore exactly the batches built in
//! the last [`SYNC_AFTER`] that the broker had not acknowledged. The position and
//! sequence files are written in place without a sync: a stale position re-sends batches
//! the collector drops as duplicates, and a stale sequence number after the machine went
//! down is detected by the run marker ([`begin_run`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MAGIC: u8 = 0xD5;
/// Consumed bytes after which the file is rewritten without them (once they also outgrow
/// what is still unsent).
const COMPACT_AFTER: u64 = 256 * 1024;
const HEADER: u64 = 9;
/// How long a record may wait unacknowledged before it is synced to the disk: the most a
/// power cut can lose (docs/operations.md).
pub const SYNC_AFTER: Duration = Duration::from_secs(1);

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    source: std::io::Error,
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting to be sent.
    pub records: u64,
    /// Bytes of a torn or corrupt tail that were cut off.
    pub torn_bytes: u64,
}

/// The spool.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    file: File,
    /// Offset of the first record not yet confirmed sent.
    head: u64,
    /// Offset of the first record not yet handed to the broker (head ≤ cursor ≤ tail).
    cursor: u64,
    /// End of the last valid record.
    tail: u64,
    /// Unsent records.
    records: u64,
    max_bytes: u64,
    /// Records dropped because the spool was full.
    pub dropped: u64,
    /// Since when records written have not been synced.
    unsynced_since: Option<Instant>,
    /// Syncs of the data file, for the benchmarks and `/metrics`.
    pub syncs: u64,
    /// The position file.
    pos: NumberFile,
    /// The last record written and where it starts, until it is handed to the broker:
    /// sending it needs no read.
    recent: Option<(u64, Vec<u8>)>,
}

fn err(path: &Path) -> impl Fn(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_owned(),
        source,
    }
}

/// A record's header: its payload's length and CRC; `None` without the magic byte.
fn header(h: &[u8; HEADER as usize]) -> Option<(u64, u32)> {
    let len = u64::from(u32::from_le_bytes([h[1], h[2], h[3], h[4]]));
    let crc = u32::from_le_bytes([h[5], h[6], h[7], h[8]]);
    (h[0] == MAGIC).then_some((len, crc))
}

/// Reads one record at `at`; `None` at the end or at a torn/corrupt record.
fn read_record(f: &mut File, at: u64, end: u64) -> Option<(Vec<u8>, u64)> {
    if at + HEADER > end {
        return None;
    }
    f.seek(SeekFrom::Start(at)).ok()?;
    let mut h = [0u8; HEADER as usize];
    f.read_exact(&mut h).ok()?;
    let (len, crc) = header(&h)?;
    if at + HEADER + len > end {
        return None;
    }
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    f.read_exact(&mut payload).ok()?;
    (crc32fast::hash(&payload) == crc).then_some((payload, at + HEADER + len))
}

/// Where the record at `at` ends, from its header alone (the payload is not read or
/// checked: it was when the record was written or found at start).
fn record_end(f: &File, at: u64, end: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; HEADER as usize];
    f.read_exact_at(&mut h, at).ok()?;
    let (len, _) = header(&h)?;
    (at + HEADER + len <= end).then_some(at + HEADER + len)
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, cutting off a torn tail.
    ///
    /// # Errors
    /// The directory or files cannot be created or read.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Recovery), SpoolError> {
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let data = dir.join("spool.dat");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data)
            .map_err(err(&data))?;
        let len = file.metadata().map_err(err(&data))?.len();
        let head = std::fs::read_to_string(dir.join("spool.pos"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(len);
        let (mut at, mut records) = (head, 0);
        while let Some((_, next)) = read_record(&mut file, at, len) {
            at = next;
            records += 1;
        }
        let torn_bytes = len - at;
        if torn_bytes > 0 {
            file.set_len(at).map_err(err(&data))?;
            file.sync_all().map_err(err(&data))?;
        }
        let mut spool = Spool {
            dir: dir.to_owned(),
            file,
            head,
            cursor: head,
            tail: at,
            records,
            max_bytes: max_bytes.max(1024),
            dropped: 0,
            unsynced_since: None,
            syncs: 0,
            pos: NumberFile::new(dir, "spool.pos"),
            recent: None,
        };
        // The position file exists from the start, so that later writes overwrite it in
        // place and keep working when the disk fills.
        if let Err(e) = spool.pos.save(head, false) {
            tracing::warn!(error = %e, "cannot write the spool position yet");
        }
        Ok((
            spool,
            Recovery {
                records,
                torn_bytes,
            },
        ))
    }

    /// Unsent records.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes the unsent records take.
    pub fn bytes(&self) -> u64 {
        self.tail - self.head
    }

    /// Appends a record, dropping the oldest ones if the spool is full. It is synced to the
    /// disk when it has waited [`SYNC_AFTER`] unacknowledged ([`Spool::sync_due`]).
    ///
    /// # Errors
    /// The write failed (disk full, I/O error).
    pub fn push(&mut self, payload: &[u8]) -> Result<(), SpoolError> {
        let need = HEADER + payload.len() as u64;
        while self.records > 0 && self.bytes() + need > self.max_bytes {
            // A record already handed to the broker (waiting out its confirmation grace)
            // was most likely delivered: making room by it is not a drop. Only records
            // never sent count; the collector sees any other loss as a sequence gap.
            let sent = self.head < self.cursor;
            self.pop()?;
            if !sent {
                self.dropped += 1;
            }
        }
        let path = self.dir.join("spool.dat");
        let mut rec = Vec::with_capacity(need as usize);
        rec.push(MAGIC);
        rec.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        rec.extend_from_slice(payload);
        self.file
            .seek(SeekFrom::Start(self.tail))
            .map_err(err(&path))?;
        self.file.write_all(&rec).map_err(err(&path))?;
        self.recent = Some((self.tail, payload.to_vec()));
        self.tail += need;
        self.records += 1;
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// When the records written since the last sync must be synced: [`SYNC_AFTER`] after
    /// the oldest of them; none when every record is synced or acknowledged.
    pub fn sync_due(&self) -> Option<Instant> {
        self.unsynced_since
            .filter(|_| self.records > 0)
            .map(|t| t + SYNC_AFTER)
    }

    /// Syncs the records written so far to the disk (one sync for all of them).
    ///
    /// # Errors
    /// The disk refused.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced_since.is_some() && self.records > 0 {
            let path = self.dir.join("spool.dat");
            if let Err(e) = self.file.sync_data() {
                // Tried again after another SYNC_AFTER.
                self.unsynced_since = Some(Instant::now());
                return Err(err(&path)(e));
            }
            self.syncs += 1;
        }
        self.unsynced_since = None;
        Ok(())
    }

    /// A clean stop: everything still waiting, and the position, are synced.
    ///
    /// # Errors
    /// The disk refused.
    pub fn close(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        self.pos.save(self.head, true)
    }

    /// The oldest unconfirmed record, if any.
    pub fn peek(&mut self) -> Option<Vec<u8>> {
        read_record(&mut self.file, self.head, self.tail).map(|(p, _)| p)
    }

    /// The next record not yet handed to the broker, advancing past it.
    pub fn next_unsent(&mut self) -> Option<Vec<u8>> {
        let (payload, next) = self.peek_unsent()?;
        self.mark_sent(next);
        Some(payload)
    }

    /// The next record not yet handed to the broker and where the one after it starts,
    /// without advancing: [`Spool::mark_sent`] once the broker's client has taken it.
    pub fn peek_unsent(&mut self) -> Option<(Vec<u8>, u64)> {
        if let Some((at, payload)) = &self.recent {
            if *at == self.cursor {
                let next = at + HEADER + payload.len() as u64;
                return Some((payload.clone(), next));
            }
        }
        read_record(&mut self.file, self.cursor, self.tail)
    }

    /// Advances past a record [`Spool::peek_unsent`] returned.
    pub fn mark_sent(&mut self, next: u64) {
        self.cursor = next.clamp(self.cursor, self.tail);
    }

    /// True when records wait to be handed to the broker.
    pub fn has_unsent(&self) -> bool {
        self.cursor < self.tail
    }

    /// Sends everything unconfirmed again (after a reconnection).
    pub fn rewind(&mut self) {
        self.cursor = self.head;
    }

    /// Marks the oldest record sent, persisting the position; compacts when worthwhile.
    ///
    /// # Errors
    /// The position file cannot be written.
    pub fn pop(&mut self) -> Result<(), SpoolError> {
        let Some(next) = record_end(&self.file, self.head, self.tail) else {
            return Ok(());
        };
        self.head = next;
        self.cursor = self.cursor.max(next);
        self.records -= 1;
        if self.records == 0 {
            // Everything sent: start the file afresh.
            let path = self.dir.join("spool.dat");
            self.file.set_len(0).map_err(err(&path))?;
            self.head = 0;
            self.cursor = 0;
            self.tail = 0;
            // Nothing left that a sync would keep.
            self.unsynced_since = None;
            self.recent = None;
        } else if self.head > COMPACT_AFTER.min(self.max_bytes / 2) && self.head > self.bytes() {
            // The consumed part outgrew the rest: with an interval shorter than the
            // delivery grace the spool is never empty, and would grow to its cap.
            self.compact()?;
        }
        self.save_head()
    }

    /// The position, in place and not synced: after a power cut a stale one re-sends
    /// batches the collector already has (and drops as duplicates).
    fn save_head(&mut self) -> Result<(), SpoolError> {
        self.pos.save(self.head, false)
    }

    /// Rewrites the file without the consumed records.
    fn compact(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join("spool.dat");
        let tmp = self.dir.join("spool.dat.tmp");
        let mut rest = vec![0u8; usize::try_from(self.bytes()).unwrap_or(0)];
        self.file
            .seek(SeekFrom::Start(self.head))
            .map_err(err(&path))?;
        self.file.read_exact(&mut rest).map_err(err(&path))?;
        let mut out = File::create(&tmp).map_err(err(&tmp))?;
        out.write_all(&rest).map_err(err(&tmp))?;
        out.sync_all().map_err(err(&tmp))?;
        // Position 0 first, synced: a crash between the two steps re-sends, never skips.
        self.cursor -= self.head;
        self.head = 0;
        self.pos.save(0, true)?;
        std::fs::rename(&tmp, &path).map_err(err(&path))?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(err(&path))?;
        self.tail = rest.len() as u64;
        // The rewritten file is synced: nothing in it waits for a sync any more. Offsets
        // moved.
        self.unsynced_since = None;
        self.recent = None;
        Ok(())
    }
}

/// The last batch sequence number, kept beside the spool so it keeps increasing across
/// agent restarts (see [`first_seq`] for where a run starts).
pub fn load_seq(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("seq"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Width of the sequence and position files: every save overwrites the same bytes in
/// place, so that a save needs no new disk block and still succeeds on a full disk.
const SEQ_WIDTH: usize = 20;

/// Stores the last sequence number once (see [`NumberFile`]), without a sync: the kernel
/// keeps it through the agent's crash, and a crash of the machine is caught by the run
/// marker ([`begin_run`]).
///
/// # Errors
/// The file cannot be written.
pub fn save_seq(dir: &Path, seq: u64) -> Result<(), SpoolError> {
    NumberFile::new(dir, "seq").save(seq, false)
}

/// A number kept in a file of its own (the spool's position, the sequence number): a
/// fixed-width record overwritten in place within one sector, so that a save needs no new
/// disk block and still succeeds on a full disk. The file stays open between saves, so a
/// save is one write. It is created with a temporary file and a rename the first time
/// (or from an older format).
#[derive(Debug)]
pub struct NumberFile {
    path: PathBuf,
    file: Option<File>,
}

impl NumberFile {
    /// The file `dir/name`, opened at the first save.
    pub fn new(dir: &Path, name: &str) -> Self {
        NumberFile {
            path: dir.join(name),
            file: None,
        }
    }

    /// Saves `n`; `durable`: synced before it returns.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&mut self, n: u64, durable: bool) -> Result<(), SpoolError> {
        use std::os::unix::fs::FileExt;
        let line = format!("{n:>w$}\n", w = SEQ_WIDTH);
        let write = |f: &File| {
            f.write_all_at(line.as_bytes(), 0)?;
            if durable {
                f.sync_data()?;
            }
            Ok::<_, std::io::Error>(())
        };
        if let Some(f) = &self.file {
            if write(f).is_ok() {
                return Ok(());
            }
            // Reopened (or made anew) below.
            self.file = None;
        }
        let in_place = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|f| {
                if f.metadata()?.len() != line.len() as u64 {
                    return Err(std::io::Error::other("not a fixed-width record"));
                }
                write(&f)?;
                Ok(f)
            });
        if let Ok(f) = in_place {
            self.file = Some(f);
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(err(&tmp))?;
        f.write_all(line.as_bytes()).map_err(err(&tmp))?;
        f.sync_data().map_err(err(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(err(&self.path))?;
        self.file = OpenOptions::new().write(true).open(&self.path).ok();
        Ok(())
    }
}

/// The kernel's id of this boot; none where the system has no such file.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// How the run before this one ended, from the run marker `dir/run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviousRun {
    /// None, or it stopped cleanly (its sequence number was synced).
    Clean,
    /// The agent died, the machine did not (same boot): what it wrote is intact.
    Crashed,
    /// The machine went down under it (another boot, or no boot id to tell): its last
    /// unsynced writes may be lost.
    MachineDown,
}

/// Marks a run as started and says how the previous one ended. The marker holds this
/// boot's id, synced, and [`end_run`] removes it.
///
/// # Errors
/// The marker cannot be written.
pub fn begin_run(dir: &Path) -> Result<PreviousRun, SpoolError> {
    let path = dir.join("run");
    let previous = match std::fs::read_to_string(&path) {
        Err(_) => PreviousRun::Clean,
        Ok(id) => match boot_id() {
            Some(now) if now == id.trim() => PreviousRun::Crashed,
            _ => PreviousRun::MachineDown,
        },
    };
    let tmp = dir.join("run.tmp");
    let mut f = File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(boot_id().unwrap_or_default().as_bytes())
        .map_err(err(&tmp))?;
    f.sync_data().map_err(err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(err(&path))?;
    Ok(previous)
}

/// Ends a run cleanly: the sequence number is synced and the run marker removed.
///
/// # Errors
/// The disk refused.
pub fn end_run(dir: &Path) -> Result<(), SpoolError> {
    let seq = dir.join("seq");
    if let Ok(f) = OpenOptions::new().write(true).open(&seq) {
        f.sync_data().map_err(err(&seq))?;
    }
    let path = dir.join("run");
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(&path)(e)),
        _ => Ok(()),
    }
}

/// The sequence numbers this run may not use again: beyond the saved one, and beyond
/// every batch still in the spool (sent first: the spool is in order). When neither can be
/// read although the spool has run before, or when the last save is older than what the
/// spool holds, the run starts
/// [`SEQ_MARGIN`] further on and says so: a number is never used twice (the collector
/// would drop the second batch as a duplicate).
///
/// `ran_before`: the spool directory held a position file before this run opened it.
/// `previous`: how that run ended; when the machine went down under it, its last unsynced
/// save may be lost, so numbering goes on [`SEQ_MARGIN`] further (the collector counts
/// an agent restart, which the machine's was).
pub fn first_seq(
    dir: &Path,
    spool: Option<&mut Spool>,
    ran_before: bool,
    previous: PreviousRun,
) -> u64 {
    let saved = load_seq(dir);
    let spooled = spool.and_then(Spool::max_seq);
    if previous == PreviousRun::MachineDown {
        let from = saved.max(spooled).unwrap_or(0).saturating_add(SEQ_MARGIN);
        tracing::warn!(
            saved = ?saved, spooled = ?spooled, from,
            "the machine went down under the last run, whose last sequence numbers may not have reached the disk; numbering goes on past any that may have been used"
        );
        return from;
    }
    match (saved, spooled) {
        (Some(s), None) => s,
        (Some(s), Some(q)) if q <= s => s,
        // A first run: the spool has never confirmed a batch.
        (None, None) if !ran_before => 0,
        (saved, spooled) => {
            let from = saved.max(spooled).unwrap_or(0).saturating_add(SEQ_MARGIN);
            tracing::warn!(
                saved = ?saved, spooled = ?spooled, from,
                "the saved sequence number is missing or behind the spool (a failed save?); numbering goes on past any that may have been used"
            );
            from
        }
    }
}

/// How far a run jumps ahead when the last sequence number is not known for sure.
pub const SEQ_MARGIN: u64 = 100_000;

#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: u64,
}

impl Spool {
    /// The highest sequence number among the batches the file still holds.
    pub fn max_seq(&mut self) -> Option<u64> {
        let (mut at, mut max) = (0, None);
        while let Some((payload, next)) = read_record(&mut self.file, at, self.tail) {
            if let Ok(b) = serde_json::from_slice::<SeqOnly>(&payload) {
                max = max.max(Some(b.seq));
            }
            at = next;
        }
        max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dcwatt-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn fifo_across_reopen() {
        let d = dir("fifo");
        let (mut s, r) = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(r, Recovery::default());
        for i in 0..10u8 {
            s.push(&[i; 100]).unwrap();
        }
        assert_eq!(s.peek(), Some(vec![0; 100]));
        s.pop().unwrap();
        s.pop().unwrap();
        drop(s);
        let (mut s, r) = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(r.records, 8);
        let mut got = Vec::new();
        while let Some(p) = s.peek() {
            got.push(p[0]);
            s.pop().unwrap();
        }
        assert_eq!(got, (2..10).collect::<Vec<u8>>());
        assert!(s.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn sent_records_stay_until_confirmed_and_rewind_resends_them() {
        let d = dir("cursor");
        let (mut s, _) = Spool::open(&d, 1 << 20).unwrap();
        for i in 0..3u8 {
            s.push(&[i]).unwrap();
        }
        assert_eq!(s.next_unsent(), Some(vec![0]));
        assert_eq!(s.next_unsent(), Some(vec![1]));
        s.pop().unwrap(); // record 0 confirmed
        s.rewind(); // the connection dropped: 1 was not confirmed
        assert_eq!(s.next_unsent(), Some(vec![1]));
        assert_eq!(s.next_unsent(), Some(vec![2]));
        assert!(!s.has_unsent());
        drop(s);
        // After a crash, everything unconfirmed is sent again.
        let (mut s, r) = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(r.records, 2);
        assert_eq!(s.next_unsent(), Some(vec![1]));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_earlier_records_survive() {
        let d = dir("torn");
        let (mut s, _) = Spool::open(&d, 1 << 20).unwrap();
        s.push(b"first").unwrap();
        s.push(b"second").unwrap();
        drop(s);
        // A crash in the middle of writing a third record.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("spool.dat"))
            .unwrap();
        f.write_all(&[MAGIC, 200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut s, r) = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!((r.records, r.torn_bytes), (2, 7));
        assert_eq!(s.peek().as_deref(), Some(&b"first"[..]));
        s.push(b"third").unwrap();
        s.pop().unwrap();
        s.pop().unwrap();
        assert_eq!(s.peek().as_deref(), Some(&b"third"[..]));
        // A flipped byte inside a record is detected by its checksum.
        drop(s);
        let mut bytes = std::fs::read(d.join("spool.dat")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(d.join("spool.dat"), bytes).unwrap();
        let (mut s, r) = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(r.records, 0);
        assert!(r.torn_bytes > 0);
        assert_eq!(s.peek(), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn making_room_by_a_sent_record_is_not_a_drop() {
        let d = dir("sent");
        // Room for three 300-byte records (309 with the header) in the 1024-byte minimum.
        let (mut s, _) = Spool::open(&d, 1024).unwrap();
        for i in 0..3u8 {
            s.push(&[i; 300]).unwrap();
        }
        assert_eq!(s.next_unsent(), Some(vec![0; 300]), "handed to the broker");
        s.push(&[3; 300]).unwrap();
        assert_eq!(s.dropped, 0, "record 0 was sent, not dropped");
        s.push(&[4; 300]).unwrap();
        assert_eq!(s.dropped, 1, "record 1 was never sent");
        assert_eq!(s.peek(), Some(vec![2; 300]));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts_them_and_compacts() {
        let d = dir("full");
        let (mut s, _) = Spool::open(&d, 4096).unwrap();
        for i in 0..100u8 {
            s.push(&[i; 100]).unwrap();
        }
        assert!(s.bytes() <= 4096);
        assert_eq!(s.len() + s.dropped, 100);
        assert!(s.dropped > 0);
        let first = s.peek().unwrap()[0];
        assert_eq!(u64::from(first), s.dropped, "the oldest went first");
        for _ in 0..s.len() - 1 {
            s.pop().unwrap();
        }
        assert_eq!(s.peek().unwrap()[0], 99);
        assert!(std::fs::metadata(d.join("spool.dat")).unwrap().len() <= 4096);
        save_seq(&d, 41).unwrap();
        assert_eq!(load_seq(&d), Some(41));
        save_seq(&d, 4_200_000_000_000).unwrap();
        save_seq(&d, 43).unwrap();
        assert_eq!(load_seq(&d), Some(43), "overwritten in place, every width");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_spool_that_is_never_empty_stays_small() {
        // An interval shorter than the delivery grace: three batches always out.
        let d = dir("busy");
        let (mut s, _) = Spool::open(&d, 64 << 20).unwrap();
        let mut largest = 0;
        for i in 0..5_000u32 {
            s.push(&[(i % 251) as u8; 1000]).unwrap();
            while s.len() > 3 {
                s.pop().unwrap();
            }
            largest = largest.max(std::fs::metadata(d.join("spool.dat")).unwrap().len());
        }
        assert!(
            largest < 2 * COMPACT_AFTER,
            "the file reached {largest} bytes"
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s.peek().unwrap()[0], (4_997 % 251) as u8);
    }

    #[test]
    fn a_run_never_reuses_a_sequence_number() {
        let batch = |seq: u64| {
            format!(r#"{{"v":1,"site":"s","node":"n","seq":{seq},"sent_ms":0,"readings":[]}}"#)
        };
        // A first start.
        let d = dir("seq-first");
        let (mut s, _) = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(first_seq(&d, Some(&mut s), false, PreviousRun::Clean), 0);
        // Saved 10, spool holds up to 9: go on from 10.
        save_seq(&d, 10).unwrap();
        s.push(batch(9).as_bytes()).unwrap();
        assert_eq!(first_seq(&d, Some(&mut s), true, PreviousRun::Clean), 10);
        // The last saves failed: the spool holds 14, beyond the saved 10.
        s.push(batch(14).as_bytes()).unwrap();
        assert_eq!(
            first_seq(&d, Some(&mut s), true, PreviousRun::Clean),
            14 + SEQ_MARGIN
        );
        // The sequence file is gone but the spool has run before.
        std::fs::remove_file(d.join("seq")).unwrap();
        assert_eq!(
            first_seq(&d, Some(&mut s), true, PreviousRun::Clean),
            14 + SEQ_MARGIN
        );
        // Saved 20 and the machine went down under that run: 20 may be stale.
        save_seq(&d, 20).unwrap();
        let down = PreviousRun::MachineDown;
        assert_eq!(first_seq(&d, Some(&mut s), true, down), 20 + SEQ_MARGIN);
        assert_eq!(first_seq(&d, Some(&mut s), true, PreviousRun::Crashed), 20);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_run_marker_tells_a_clean_stop_an_agent_crash_and_a_machine_crash_apart() {
        let d = dir("run-marker");
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(begin_run(&d).unwrap(), PreviousRun::Clean, "a first run");
        end_run(&d).unwrap();
        assert_eq!(
            begin_run(&d).unwrap(),
            PreviousRun::Clean,
            "after a clean stop"
        );
        // No end_run: the agent died; the marker holds this boot's id.
        let expected = if boot_id().is_some() {
            PreviousRun::Crashed
        } else {
            PreviousRun::MachineDown
        };
        assert_eq!(begin_run(&d).unwrap(), expected);
        // A marker from another boot: the machine went down under that run.
        std::fs::write(d.join("run"), "00000000-0000-0000-0000-000000000000").unwrap();
        assert_eq!(begin_run(&d).unwrap(), PreviousRun::MachineDown);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn records_are_synced_once_they_wait_and_never_when_acknowledged_first() {
        let d = dir("group-commit");
        let (mut s, _) = Spool::open(&d, 1 << 20).unwrap();
        let t0 = Instant::now();
        s.push(b"one").unwrap();
        s.push(b"two").unwrap();
        let due = s.sync_due().expect("unsynced records are due");
        assert!(due >= t0 + SYNC_AFTER && due <= Instant::now() + SYNC_AFTER);
        // One sync covers both.
        s.sync().unwrap();
        assert_eq!((s.sync_due(), s.syncs), (None, 1));
        s.sync().unwrap();
        assert_eq!(s.syncs, 1, "nothing new: no sync");
        // Written and acknowledged before it was due: never synced.
        s.push(b"three").unwrap();
        assert!(s.sync_due().is_some());
        for _ in 0..3 {
            s.next_unsent().unwrap();
            s.pop().unwrap();
        }
        assert_eq!((s.sync_due(), s.syncs), (None, 1));
        s.close().unwrap();
        assert_eq!(s.syncs, 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
