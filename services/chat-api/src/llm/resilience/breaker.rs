//! A circuit breaker for one provider endpoint.
//!
//! Hand-written on purpose: the maintained crates (`failsafe`, `tower`'s
//! retry budget) neither expose the state for `/readyz` and a gauge, nor tell
//! how long until the next probe (our `Retry-After`), nor let a result be
//! classified as "neither success nor failure" (a 429, a content filter),
//! which this issue requires. It is a small state machine under one mutex.
//!
//! * **Closed**: calls go through; consecutive failures are counted, a success
//!   resets the count, a neutral result (rate limited, filtered, client error)
//!   leaves it. At `threshold` failures the breaker opens.
//! * **Open** for `cooldown`: calls fail fast with how long is left.
//! * **Half-open** after the cooldown: one probe call goes through (others fail
//!   fast); its success (or any answer that is not a failure) closes the
//!   breaker, its failure opens it again for another cooldown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How one call ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// The upstream answered, but not with an answer: counts neither way.
    Neutral,
}

/// The externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

type OnChange = Box<dyn Fn(BreakerState) + Send + Sync>;

pub struct Breaker {
    /// Consecutive failures that open the breaker; 0 turns it off.
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
    on_change: OnChange,
}

/// Leave to make one call; give it back with [`Permit::record`]. Dropped
/// without a record (the caller went away), a probe frees the half-open slot.
pub struct Permit {
    breaker: Option<Arc<Breaker>>,
    probe: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration, on_change: impl Fn(BreakerState) + Send + Sync + 'static) -> Self {
        let breaker = Self {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            on_change: Box::new(on_change),
        };
        (breaker.on_change)(BreakerState::Closed);
        breaker
    }

    pub fn enabled(&self) -> bool {
        self.threshold > 0
    }

    /// The state now, and how long until a probe is let through when open.
    pub fn state(&self) -> (BreakerState, Option<Duration>) {
        match &*self.state.lock().expect("breaker lock") {
            State::Closed { .. } => (BreakerState::Closed, None),
            State::Open { until } => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() { (BreakerState::HalfOpen, None) } else { (BreakerState::Open, Some(left)) }
            }
            State::HalfOpen { .. } => (BreakerState::HalfOpen, None),
        }
    }

    /// A permit to call, or how long to wait before asking again.
    pub fn acquire(self: &Arc<Self>) -> Result<Permit, Duration> {
        if !self.enabled() {
            return Ok(Permit { breaker: None, probe: false });
        }
        let mut state = self.state.lock().expect("breaker lock");
        match &mut *state {
            State::Closed { .. } => Ok(Permit { breaker: Some(self.clone()), probe: false }),
            State::Open { until } => {
                let left = until.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    return Err(left);
                }
                *state = State::HalfOpen { probing: true };
                (self.on_change)(BreakerState::HalfOpen);
                Ok(Permit { breaker: Some(self.clone()), probe: true })
            }
            // One probe at a time; the others fail fast until it ends.
            State::HalfOpen { probing: true } => Err(Duration::from_secs(1)),
            State::HalfOpen { probing } => {
                *probing = true;
                Ok(Permit { breaker: Some(self.clone()), probe: true })
            }
        }
    }

    fn record(&self, probe: bool, outcome: Outcome) {
        let mut state = self.state.lock().expect("breaker lock");
        let next = match (&*state, outcome) {
            (_, Outcome::Success) => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, Outcome::Neutral) if probe => State::Closed { failures: 0 },
            (State::Closed { failures }, Outcome::Failure) if failures + 1 < self.threshold => {
                State::Closed { failures: failures + 1 }
            }
            (State::Closed { .. }, Outcome::Failure) => State::Open { until: Instant::now() + self.cooldown },
            (State::HalfOpen { .. }, Outcome::Failure) if probe => {
                State::Open { until: Instant::now() + self.cooldown }
            }
            // A call let through before the breaker opened ends after it: no change.
            _ => return,
        };
        let changed = std::mem::discriminant(&*state) != std::mem::discriminant(&next);
        *state = next;
        if changed {
            let visible = match &*state {
                State::Closed { .. } => BreakerState::Closed,
                State::Open { .. } => BreakerState::Open,
                State::HalfOpen { .. } => BreakerState::HalfOpen,
            };
            (self.on_change)(visible);
        }
    }

    fn abandon_probe(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if let State::HalfOpen { probing } = &mut *state {
            *probing = false;
        }
    }
}

impl Permit {
    pub fn record(mut self, outcome: Outcome) {
        if let Some(breaker) = self.breaker.take() {
            breaker.record(self.probe, outcome);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let (Some(breaker), true) = (self.breaker.take(), self.probe) {
            breaker.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, cooldown: Duration) -> Arc<Breaker> {
        Arc::new(Breaker::new(threshold, cooldown, |_| {}))
    }

    fn call(b: &Arc<Breaker>, outcome: Outcome) -> Result<(), Duration> {
        b.acquire().map(|p| p.record(outcome))
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, Duration::from_secs(30));
        for _ in 0..2 {
            call(&b, Outcome::Failure).unwrap();
        }
        call(&b, Outcome::Success).unwrap();
        for _ in 0..2 {
            call(&b, Outcome::Failure).unwrap();
        }
        // Neutral results neither count nor reset.
        call(&b, Outcome::Neutral).unwrap();
        assert_eq!(b.state().0, BreakerState::Closed);
        call(&b, Outcome::Failure).unwrap();
        assert_eq!(b.state().0, BreakerState::Open);
        let wait = b.acquire().err().expect("fails fast");
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30), "{wait:?}");
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let b = breaker(1, Duration::from_millis(30));
        call(&b, Outcome::Failure).unwrap();
        assert!(b.acquire().is_err());
        std::thread::sleep(Duration::from_millis(40));
        let probe = b.acquire().expect("probe after the cooldown");
        assert_eq!(b.state().0, BreakerState::HalfOpen);
        assert!(b.acquire().is_err(), "a second call while probing fails fast");
        probe.record(Outcome::Failure);
        assert_eq!(b.state().0, BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        // A probe abandoned (caller gone) frees the slot.
        drop(b.acquire().unwrap());
        b.acquire().unwrap().record(Outcome::Neutral);
        assert_eq!(b.state().0, BreakerState::Closed);
    }

    #[test]
    fn zero_threshold_is_off() {
        let b = breaker(0, Duration::from_secs(30));
        for _ in 0..100 {
            call(&b, Outcome::Failure).unwrap();
        }
        assert_eq!(b.state().0, BreakerState::Closed);
    }
}
