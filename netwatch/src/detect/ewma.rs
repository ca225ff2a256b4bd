//! An exponentially weighted mean and variance of one rate series.

/// EWMA mean and variance with smoothing `alpha` (Finch, "Incremental calculation of weighted
/// mean and variance", 2009, section 9).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    mean: f64,
    variance: f64,
    samples: u32,
}

impl Ewma {
    /// Folds one sample in.
    pub fn update(&mut self, alpha: f64, value: f64) {
        if self.samples == 0 {
            self.mean = value;
            self.variance = 0.0;
        } else {
            let diff = value - self.mean;
            let increment = alpha * diff;
            self.mean += increment;
            self.variance = (1.0 - alpha) * (self.variance + diff * increment);
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The standard deviation.
    pub fn sigma(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }

    /// Samples seen, saturating.
    pub fn samples(&self) -> u32 {
        self.samples
    }
}

/// The smoothing factor of an EWMA whose centre of mass matches a simple moving average of
/// `window` samples.
pub fn alpha_for_window(window: u32) -> f64 {
    2.0 / (f64::from(window.max(1)) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_series_has_no_deviation() {
        let mut ewma = Ewma::default();
        for _ in 0..100 {
            ewma.update(0.1, 50.0);
        }
        assert_eq!(ewma.mean(), 50.0);
        assert_eq!(ewma.sigma(), 0.0);
        assert_eq!(ewma.samples(), 100);
    }

    #[test]
    fn alternating_series_converges_to_its_middle_and_spread() {
        let mut ewma = Ewma::default();
        for i in 0..2000 {
            ewma.update(alpha_for_window(30), if i % 2 == 0 { 100.0 } else { 300.0 });
        }
        assert!((ewma.mean() - 200.0).abs() < 10.0, "{}", ewma.mean());
        assert!((ewma.sigma() - 100.0).abs() < 10.0, "{}", ewma.sigma());
    }
}
