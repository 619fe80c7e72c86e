//! SI units as types. Vendor units (µW, mW, 0.01 kW, 0.1 kWh) are converted at the edge,
//! once, in the source that reads them; everything past that speaks these types.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign, Div, Mul, Sub};

/// Power in watts.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Watts(pub f64);

/// Energy in joules.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Joules(pub f64);

/// A duration in seconds, as a float, for unit arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Seconds(pub f64);

/// Milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct TimestampMs(pub i64);

/// Applies a vendor scale factor. A factor below 1 that is the reciprocal of a whole number
/// (0.1, 0.01, 0.001) divides instead of multiplying, so that 41 × 0.01 is exactly 0.41,
/// as an engineer reading the device's display expects.
pub fn scaled(raw: f64, scale: f64) -> f64 {
    if scale != 0.0 && scale.abs() < 1.0 {
        let divisor = 1.0 / scale;
        let whole = divisor.round();
        if (divisor - whole).abs() < 1e-9 * whole.abs() {
            return raw / whole;
        }
    }
    raw * scale
}

impl Joules {
    /// Joules per kilowatt-hour.
    pub const PER_KWH: f64 = 3.6e6;

    /// This energy in kilowatt-hours.
    pub fn kwh(self) -> f64 {
        self.0 / Self::PER_KWH
    }
}

impl TimestampMs {
    /// Seconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn seconds_since(self, earlier: TimestampMs) -> Seconds {
        Seconds((self.0 - earlier.0) as f64 / 1000.0)
    }
}

impl Div<Seconds> for Joules {
    type Output = Watts;
    fn div(self, rhs: Seconds) -> Watts {
        Watts(self.0 / rhs.0)
    }
}

impl Mul<Seconds> for Watts {
    type Output = Joules;
    fn mul(self, rhs: Seconds) -> Joules {
        Joules(self.0 * rhs.0)
    }
}

macro_rules! additive {
    ($t:ident) => {
        impl Add for $t {
            type Output = $t;
            fn add(self, rhs: $t) -> $t {
                $t(self.0 + rhs.0)
            }
        }
        impl Sub for $t {
            type Output = $t;
            fn sub(self, rhs: $t) -> $t {
                $t(self.0 - rhs.0)
            }
        }
        impl AddAssign for $t {
            fn add_assign(&mut self, rhs: $t) {
                self.0 += rhs.0;
            }
        }
    };
}
additive!(Watts);
additive!(Joules);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_factors_are_exact() {
        assert_eq!(scaled(41.0, 0.01), 0.41);
        assert_eq!(scaled(19516.0, 0.1), 1951.6);
        assert_eq!(scaled(121.0, 10.0), 1210.0);
        assert_eq!(scaled(3.0, 0.3), 3.0 * 0.3);
        assert_eq!(scaled(5.0, 0.0), 0.0);
    }

    #[test]
    fn energy_over_time_is_power() {
        assert_eq!(Joules(3600.0) / Seconds(60.0), Watts(60.0));
        assert_eq!(Watts(500.0) * Seconds(2.0), Joules(1000.0));
        assert_eq!(Joules(7.2e6).kwh(), 2.0);
        assert_eq!(
            TimestampMs(2500).seconds_since(TimestampMs(1000)),
            Seconds(1.5)
        );
    }
}
