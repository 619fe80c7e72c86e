//! A ring of fixed-width time buckets holding energy and coverage, so that a rolling window
//! of any length up to the ring's span is a sum over buckets.
//!
//! Segments (an energy between two samples) are spread over the buckets they overlap in
//! proportion to the overlap, i.e. assuming constant power within a segment.

/// One bucket's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    /// Absolute bucket index (start time / width); `i64::MIN` when unused.
    idx: i64,
    /// Energy in joules.
    pub energy_j: f64,
    /// Series-milliseconds covered by data (one series over the whole bucket = width).
    pub covered_ms: f64,
    /// Part of `energy_j` that came from estimated readings.
    pub estimated_j: f64,
    /// Energy estimated for meter-time with no valid data (a gap, a reset), from the
    /// meter's own readings around it: not in `energy_j`, not covered.
    #[serde(default)]
    pub filled_j: f64,
}

/// Totals over a range of buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Energy in joules.
    pub energy_j: f64,
    /// Series-milliseconds covered.
    pub covered_ms: f64,
    /// Estimated part of the energy.
    pub estimated_j: f64,
    /// Energy estimated for uncovered meter-time.
    pub filled_j: f64,
}

/// The ring. Holds at most `len` consecutive buckets, ending at the newest written, and
/// allocates only the stretch it holds: a meter with one reading costs one bucket per
/// ring, not the ring's whole span. Saved sparsely: only the buckets in use.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "SavedRing", try_from = "SavedRing")]
pub struct Ring {
    width_ms: i64,
    /// Most buckets held.
    len: usize,
    /// Absolute index of `held[0]`.
    base: i64,
    /// Consecutive buckets from `base`; unused ones have `idx == i64::MIN`.
    held: std::collections::VecDeque<Bucket>,
}

const UNUSED: Bucket = Bucket {
    idx: i64::MIN,
    energy_j: 0.0,
    covered_ms: 0.0,
    estimated_j: 0.0,
    filled_j: 0.0,
};

impl Ring {
    /// At most `len` buckets of `width_ms` each; nothing allocated until written.
    pub fn new(width_ms: i64, len: usize) -> Self {
        Ring {
            width_ms,
            len: len.max(1),
            base: 0,
            held: std::collections::VecDeque::new(),
        }
    }

    /// Buckets allocated now (for tests of what a ring costs).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn slot_mut(&mut self, idx: i64) -> Option<&mut Bucket> {
        let cap = self.len as i64;
        if self.held.is_empty() {
            self.base = idx;
            self.held.push_back(UNUSED);
        }
        let newest = self.base + self.held.len() as i64 - 1;
        if idx > newest {
            if idx - newest >= cap {
                // Everything held is older than the new bucket's ring span.
                self.held.clear();
                self.base = idx;
                self.held.push_back(UNUSED);
            } else {
                for _ in newest..idx {
                    self.held.push_back(UNUSED);
                }
                while self.held.len() > self.len {
                    self.held.pop_front();
                    self.base += 1;
                }
            }
        } else if idx < self.base {
            let newest = self.base + self.held.len() as i64 - 1;
            if newest - idx >= cap {
                // Older than what the ring still holds.
                return None;
            }
            for _ in idx..self.base {
                self.held.push_front(UNUSED);
            }
            self.base = idx;
        }
        let slot = self.held.get_mut((idx - self.base) as usize)?;
        if slot.idx != idx {
            *slot = Bucket { idx, ..UNUSED };
        }
        Some(slot)
    }
    /// Adds measured `energy_j` spread uniformly over `[t0, t1)` (the tests' shorthand
    /// for `spread`).
    #[cfg(test)]
    pub fn add(&mut self, t0: i64, t1: i64, energy_j: f64, estimated: bool) -> bool {
        self.spread(t0, t1, energy_j, Spread::Energy { estimated }, 1.0)
    }

    /// Adds (`sign` 1) or takes back exactly (`sign` −1: a segment that a late sample
    /// split in two) `energy_j` of `what` spread uniformly over `[t0, t1)`. Returns false
    /// when part of the segment was older than the ring holds (that part is left alone).
    pub fn spread(&mut self, t0: i64, t1: i64, energy_j: f64, what: Spread, sign: f64) -> bool {
        if t1 <= t0 {
            return true;
        }
        let span = (t1 - t0) as f64;
        let mut whole = true;
        let mut idx = t0.div_euclid(self.width_ms);
        while idx * self.width_ms < t1 {
            let from = t0.max(idx * self.width_ms);
            let to = t1.min((idx + 1) * self.width_ms);
            let overlap = (to - from) as f64;
            match self.slot_mut(idx) {
                Some(b) => {
                    let e = sign * energy_j * overlap / span;
                    match what {
                        Spread::Energy { estimated } => {
                            b.energy_j += e;
                            b.covered_ms += sign * overlap;
                            if estimated {
                                b.estimated_j += e;
                            }
                        }
                        Spread::Fill => b.filled_j += e,
                    }
                }
                None => whole = false,
            }
            idx += 1;
        }
        whole
    }

    /// Totals over `[from, to)`; both must be multiples of the width.
    pub fn sum(&self, from: i64, to: i64) -> Totals {
        let mut t = Totals::default();
        let end = to.div_euclid(self.width_ms);
        // Never walk more than the ring holds.
        let start = from
            .div_euclid(self.width_ms)
            .max(end - self.len as i64)
            .max(self.base);
        let stop = end.min(self.base + self.held.len() as i64);
        let mut idx = start;
        while idx < stop {
            let b = &self.held[(idx - self.base) as usize];
            if b.idx == idx {
                t.energy_j += b.energy_j;
                t.covered_ms += b.covered_ms;
                t.estimated_j += b.estimated_j;
                t.filled_j += b.filled_j;
            }
            idx += 1;
        }
        t
    }
}

/// What a segment is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spread {
    /// Energy from readings (measured, or `estimated` ones) over the time it covers.
    Energy {
        /// From estimated readings.
        estimated: bool,
    },
    /// An estimate for a stretch without valid data: neither energy nor covered time.
    Fill,
}

/// How a ring is saved: its shape and the buckets in use.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedRing {
    width_ms: i64,
    len: usize,
    used: Vec<Bucket>,
}

impl From<Ring> for SavedRing {
    fn from(r: Ring) -> Self {
        SavedRing {
            width_ms: r.width_ms,
            len: r.len,
            used: r.held.into_iter().filter(|b| b.idx != i64::MIN).collect(),
        }
    }
}

impl TryFrom<SavedRing> for Ring {
    type Error = String;
    fn try_from(s: SavedRing) -> Result<Self, String> {
        if s.width_ms <= 0 || s.len == 0 || s.len > 1 << 20 {
            return Err(format!("bad ring shape {} × {}", s.len, s.width_ms));
        }
        let mut r = Ring::new(s.width_ms, s.len);
        let mut used = s.used;
        // Oldest first, so that a bucket the ring span has left behind is dropped.
        used.sort_by_key(|b| b.idx);
        for b in used {
            if let Some(slot) = r.slot_mut(b.idx) {
                *slot = b;
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_segments_over_buckets() {
        let mut r = Ring::new(1000, 10);
        assert!(r.add(500, 2500, 2000.0, false));
        let all = r.sum(0, 3000);
        assert_eq!(all.energy_j, 2000.0);
        assert_eq!(all.covered_ms, 2000.0);
        assert_eq!(r.sum(1000, 2000).energy_j, 1000.0);
        assert_eq!(r.sum(0, 1000).energy_j, 500.0);
        assert_eq!(r.sum(0, 1000).estimated_j, 0.0);
    }

    #[test]
    fn old_buckets_are_overwritten_and_late_data_refused() {
        let mut r = Ring::new(1000, 4);
        r.add(0, 1000, 10.0, true);
        r.add(4000, 5000, 20.0, false); // same slot as bucket 0, newer
        assert_eq!(r.sum(0, 1000).energy_j, 0.0);
        assert_eq!(r.sum(4000, 5000).energy_j, 20.0);
        assert!(!r.add(0, 1000, 5.0, false), "older than the ring holds");
        assert_eq!(r.sum(0, 5000).energy_j, 20.0);
    }

    #[test]
    fn a_ring_holds_only_the_stretch_it_was_given() {
        let mut r = Ring::new(1000, 1800);
        assert_eq!(r.held(), 0);
        r.add(5_000, 6_000, 1.0, false);
        assert_eq!(r.held(), 1, "one reading, one bucket");
        r.add(2_000, 3_000, 1.0, false); // late, within the span
        assert_eq!(r.held(), 4);
        assert_eq!(r.sum(0, 10_000).energy_j, 2.0);
        // A jump past the span leaves nothing old behind.
        r.add(10_000_000, 10_001_000, 3.0, false);
        assert_eq!(r.held(), 1);
        assert_eq!(r.sum(9_000_000, 10_100_000).energy_j, 3.0);
        // Steady data fills the span and no more.
        for i in 0..5_000 {
            r.add(20_000_000 + i * 1000, 20_001_000 + i * 1000, 1.0, false);
        }
        assert_eq!(r.held(), 1800);
        let end = 20_000_000 + 5_000 * 1000;
        assert_eq!(r.sum(end - 1_800_000, end).energy_j, 1800.0);
        assert!(!r.add(end - 1_800_001, end - 1_799_000, 1.0, false));
    }

    #[test]
    fn a_saved_ring_comes_back_the_same() {
        let mut r = Ring::new(1000, 10);
        r.add(3_000, 6_000, 3.0, true);
        r.add(12_000, 13_000, 2.0, false);
        let json = serde_json::to_string(&r).expect("saves");
        let back: Ring = serde_json::from_str(&json).expect("loads");
        assert_eq!(back.sum(0, 20_000), r.sum(0, 20_000));
        assert_eq!(back.sum(3_000, 4_000), r.sum(3_000, 4_000));
        assert_eq!(back.held(), r.held());
    }
}
