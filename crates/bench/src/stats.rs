//! Order statistics of one cell's samples: nearest-rank p50/p99, min, max,
//! mean. With n < 100 the p99 is the largest or second-largest sample; the
//! tables print n beside every row so that is visible.

use serde::Serialize;

/// Summary of a sample.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub(crate) struct Stats {
    pub(crate) n: usize,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) min: f64,
    pub(crate) mean: f64,
}

/// Nearest-rank percentiles (the value at rank ceil(q * n)); NaN when empty.
pub(crate) fn stats(mut v: Vec<f64>) -> Stats {
    v.retain(|x| x.is_finite());
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    };
    let mean = if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    Stats {
        n: v.len(),
        p50: pick(0.5),
        p99: pick(0.99),
        max: v.last().copied().unwrap_or(f64::NAN),
        min: v.first().copied().unwrap_or(f64::NAN),
        mean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = stats((1..=100).map(|x| x as f64).collect());
        assert_eq!(
            (s.p50, s.p99, s.max, s.min, s.n),
            (50.0, 99.0, 100.0, 1.0, 100)
        );
        assert_eq!(s.mean, 50.5);
        let s = stats(vec![3.0]);
        assert_eq!((s.p50, s.p99, s.max), (3.0, 3.0, 3.0));
        // 10 samples: p99 is the max, p50 the 5th smallest
        let s = stats((1..=10).rev().map(|x| x as f64).collect());
        assert_eq!((s.p50, s.p99, s.max), (5.0, 10.0, 10.0));
    }

    #[test]
    fn empty_and_non_finite() {
        let s = stats(vec![f64::NAN, f64::INFINITY]);
        assert_eq!(s.n, 0);
        assert!(s.p50.is_nan() && s.max.is_nan());
    }
}
