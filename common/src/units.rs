//! Units: vendor units (µW, mW, 0.01 kW, 0.1 kWh) are converted to SI at the edge, once,
//! in the source that reads them; everything past that speaks W, J, s and ms.

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

/// The sum of `values`, 0 (never −0) when there are none: `Iterator::sum` of floats
/// starts from −0, which JSON and the metrics text would print as `-0`.
pub fn total(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().fold(0.0, |a, b| a + b)
}

/// `v`, with −0 as 0: what is shown never says "-0".
pub fn unsigned_zero(v: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_of_nothing_is_zero_not_minus_zero() {
        let none: [f64; 0] = [];
        assert!(total(none).is_sign_positive());
        assert!(unsigned_zero(-0.0).is_sign_positive());
        assert_eq!(total([1.5, 2.5]), 4.0);
        assert_eq!(format!("{}", total(none) / 2500.0), "0");
    }

    #[test]
    fn scale_factors_are_exact() {
        assert_eq!(scaled(41.0, 0.01), 0.41);
        assert_eq!(scaled(19516.0, 0.1), 1951.6);
        assert_eq!(scaled(121.0, 10.0), 1210.0);
        assert_eq!(scaled(3.0, 0.3), 3.0 * 0.3);
        assert_eq!(scaled(5.0, 0.0), 0.0);
    }
}
