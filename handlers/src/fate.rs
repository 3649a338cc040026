//! The random outcome of a node's own simulated work.

use std::sync::Mutex;

use rand::{rngs::StdRng, Rng, SeedableRng};

/// Draws whether a piece of simulated work fails, and with which code.
#[derive(Debug)]
pub struct Fate {
    fail_rate: f64,
    rng: Mutex<StdRng>,
}

impl Fate {
    /// Failures happen with probability `fail_rate` (0 to 1), split evenly between 500 and
    /// 502. With a `seed` the sequence of draws is reproducible; `salt` (the node name)
    /// gives each node its own sequence.
    pub fn new(fail_rate: f64, seed: Option<u64>, salt: &str) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed ^ fnv1a(salt.as_bytes())),
            None => StdRng::from_os_rng(),
        };
        Self {
            fail_rate: fail_rate.clamp(0.0, 1.0),
            rng: Mutex::new(rng),
        }
    }

    /// `None` for success, or the failure code (500 or 502).
    pub fn draw(&self) -> Option<u16> {
        self.draw_with(None)
    }

    /// As [`Fate::draw`], with `fail_rate` instead of this fate's own when given.
    pub fn draw_with(&self, fail_rate: Option<f64>) -> Option<u16> {
        let fail_rate = fail_rate.map_or(self.fail_rate, |r| r.clamp(0.0, 1.0));
        if fail_rate <= 0.0 {
            return None;
        }
        // The lock is held only for two draws and never across an await; a poisoned lock
        // still holds a usable generator.
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if rng.random::<f64>() < fail_rate {
            Some(if rng.random_bool(0.5) { 500 } else { 502 })
        } else {
            None
        }
    }
}

/// FNV-1a: a fixed hash, so a seed means the same thing on every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_and_always() {
        let never = Fate::new(0.0, None, "a");
        let always = Fate::new(1.0, None, "a");
        for _ in 0..1000 {
            assert_eq!(never.draw(), None);
            assert!(matches!(always.draw(), Some(500 | 502)));
        }
    }

    #[test]
    fn rate_and_split_are_respected() {
        let fate = Fate::new(0.25, Some(7), "T");
        let draws: Vec<_> = (0..20_000).map(|_| fate.draw()).collect();
        let failed = draws.iter().filter(|d| d.is_some()).count();
        let c500 = draws.iter().filter(|d| **d == Some(500)).count();
        assert!(
            (4_500..5_500).contains(&failed),
            "{failed} failures of 20000"
        );
        assert!(
            (2_000..3_000).contains(&c500),
            "{c500} of {failed} were 500"
        );
    }

    #[test]
    fn seed_reproduces_per_node() {
        let run = |name| {
            let f = Fate::new(0.5, Some(42), name);
            (0..64).map(|_| f.draw()).collect::<Vec<_>>()
        };
        assert_eq!(run("T"), run("T"));
        assert_ne!(run("T"), run("H"));
    }
}
