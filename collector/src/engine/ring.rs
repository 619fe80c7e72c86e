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

/// The ring. Saved sparsely: only the buckets in use.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "SavedRing", try_from = "SavedRing")]
pub struct Ring {
    width_ms: i64,
    slots: Vec<Bucket>,
}

impl Ring {
    /// `len` buckets of `width_ms` each.
    pub fn new(width_ms: i64, len: usize) -> Self {
        Ring {
            width_ms,
            slots: vec![
                Bucket {
                    idx: i64::MIN,
                    ..Bucket::default()
                };
                len
            ],
        }
    }

    fn slot_mut(&mut self, idx: i64) -> Option<&mut Bucket> {
        let len = self.slots.len() as i64;
        let slot = &mut self.slots[idx.rem_euclid(len) as usize];
        if slot.idx == idx {
            Some(slot)
        } else if slot.idx < idx {
            *slot = Bucket {
                idx,
                ..Bucket::default()
            };
            Some(slot)
        } else {
            // Older than what the ring still holds.
            None
        }
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
        let len = self.slots.len() as i64;
        let mut idx = from.div_euclid(self.width_ms);
        let end = to.div_euclid(self.width_ms);
        // Never walk more than the ring holds.
        idx = idx.max(end - len);
        while idx < end {
            let b = &self.slots[idx.rem_euclid(len) as usize];
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
            len: r.slots.len(),
            used: r.slots.into_iter().filter(|b| b.idx != i64::MIN).collect(),
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
        let len = s.len as i64;
        for b in s.used {
            r.slots[b.idx.rem_euclid(len) as usize] = b;
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
}
