//! Per-operation timing with one clock read per operation.
//!
//! Reading the clock twice around every operation (`Instant::now` and
//! `elapsed`) costs about 45 ns on this machine, a tenth of a daxkv get:
//! that is the harness measuring itself. [`Laps`] reads the time-stamp
//! counter (through `quanta`, which checks that the TSC is invariant and
//! falls back to the OS clock otherwise) once per operation and charges
//! each operation the time since the previous read, so the small cost of
//! recording into the histogram lands in the next operation's figure
//! instead of being paid twice.

use quanta::Clock;

/// Consecutive lap times of one thread.
pub struct Laps {
    clock: Clock,
    last: u64,
}

impl Laps {
    /// Start timing now.
    pub fn start(clock: &Clock) -> Laps {
        let clock = clock.clone();
        let last = clock.raw();
        Laps { clock, last }
    }

    /// Nanoseconds since the previous lap (or the start), at least 1.
    #[inline]
    pub fn lap(&mut self) -> u64 {
        let now = self.clock.raw();
        let ns = self.clock.delta_as_nanos(self.last, now);
        self.last = now;
        ns.max(1)
    }

    /// Restart the lap without recording it (after work that is not an
    /// operation, such as a progress update).
    #[inline]
    pub fn reset(&mut self) {
        self.last = self.clock.raw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn laps_agree_with_the_os_clock() {
        let clock = Clock::new();
        let mut laps = Laps::start(&clock);
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let ns = laps.lap();
        let os = t.elapsed().as_nanos() as u64;
        // The lap covers the sleep and ends before `os` is read, so
        // 20 ms <= lap <~ os, up to the TSC calibration's scale error (5 %
        // allowed) and the few ns between `laps` starting and `t`.
        assert!(ns >= 19_000_000, "lap {ns} ns is shorter than the 20 ms slept");
        assert!(ns as f64 <= os as f64 * 1.05 + 1e6, "lap {ns} ns against {os} ns by the OS clock");
    }
}
