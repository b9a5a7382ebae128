//! The clock and the event queue: events fire in time order, and events at the same
//! instant in the order they were scheduled, so a run is a pure function of its seed.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Simulated time in microseconds since the request was posted.
pub type Micros = u64;

/// Microseconds in a millisecond.
pub const MS: Micros = 1_000;
/// Microseconds in a second.
pub const SEC: Micros = 1_000_000;

/// Seconds as simulated time (negative and NaN become 0).
pub fn secs(s: f64) -> Micros {
    if s.is_finite() && s > 0.0 {
        (s * SEC as f64).round() as Micros
    } else {
        0
    }
}

struct Scheduled<E> {
    at: Micros,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Scheduled<E> {}
impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Scheduled<E> {
    // Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A discrete-event queue with its clock.
pub struct Engine<E> {
    now: Micros,
    seq: u64,
    queue: BinaryHeap<Scheduled<E>>,
}

impl<E> std::fmt::Debug for Engine<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("now", &self.now)
            .field("pending", &self.queue.len())
            .finish()
    }
}

impl<E> Default for Engine<E> {
    fn default() -> Self {
        Engine {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
        }
    }
}

impl<E> Engine<E> {
    /// The time of the event being handled.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Schedules `event` at `at`; a time in the past means now (time never runs back).
    pub fn at(&mut self, at: Micros, event: E) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            event,
        });
    }

    /// Schedules `event` `delay` from now.
    pub fn after(&mut self, delay: Micros, event: E) {
        self.at(self.now.saturating_add(delay), event);
    }

    /// The next event, advancing the clock to it.
    pub fn pop(&mut self) -> Option<E> {
        let s = self.queue.pop()?;
        self.now = s.at;
        Some(s.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_time_then_schedule_order() {
        let mut e = Engine::default();
        e.at(30, "c");
        e.at(10, "a");
        e.at(10, "b");
        assert_eq!(e.pop(), Some("a"));
        assert_eq!(e.now(), 10);
        e.at(0, "now");
        assert_eq!(e.pop(), Some("b"));
        assert_eq!(e.pop(), Some("now"));
        assert_eq!(e.now(), 10, "the past is now");
        assert_eq!(e.pop(), Some("c"));
        assert_eq!(e.pop(), None);
    }
}
