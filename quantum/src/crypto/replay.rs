//! The receive side's replay window over packet numbers.
//!
//! A packet number is accepted once: the window remembers the highest number authenticated so
//! far and which of the [`WINDOW`] numbers below it were seen. Anything older than the window
//! is refused too, so a recorded datagram can never be played back. The window is only marked
//! after a datagram authenticated, so forged packet numbers cannot move it.

/// Packet numbers tracked below the highest one seen; older ones are refused.
pub const WINDOW: u64 = 2048;

const WORDS: usize = (WINDOW / 64) as usize;

/// Which packet numbers were already accepted.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// The highest packet number accepted, if any.
    highest: Option<u64>,
    /// One bit per packet number modulo [`WINDOW`].
    seen: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> ReplayWindow {
        ReplayWindow {
            highest: None,
            seen: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Whether `number` is new: never accepted and not older than the window.
    pub fn is_new(&self, number: u64) -> bool {
        match self.highest {
            None => true,
            Some(highest) if number > highest => true,
            Some(highest) if highest - number >= WINDOW => false,
            Some(_) => !self.bit(number),
        }
    }

    /// Records `number` as accepted; call only after it authenticated and [`Self::is_new`].
    pub fn mark(&mut self, number: u64) {
        match self.highest {
            Some(highest) if number <= highest => {}
            Some(highest) if number - highest < WINDOW => {
                for cleared in highest + 1..number {
                    self.set(cleared, false);
                }
                self.highest = Some(number);
            }
            _ => {
                self.seen = [0; WORDS];
                self.highest = Some(number);
            }
        }
        self.set(number, true);
    }

    fn bit(&self, number: u64) -> bool {
        let slot = number % WINDOW;
        self.seen[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    fn set(&mut self, number: u64, on: bool) {
        let slot = number % WINDOW;
        let word = &mut self.seen[(slot / 64) as usize];
        if on {
            *word |= 1 << (slot % 64);
        } else {
            *word &= !(1 << (slot % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ReplayWindow, WINDOW};

    #[test]
    fn each_number_is_accepted_once_in_any_order() {
        let mut window = ReplayWindow::default();
        for number in [5, 3, 9, 4, 100, 6] {
            assert!(window.is_new(number));
            window.mark(number);
            assert!(!window.is_new(number));
        }
        for number in [3, 4, 5, 6, 9, 100] {
            assert!(!window.is_new(number), "{number} replayed");
        }
        assert!(window.is_new(7) && window.is_new(99) && window.is_new(101));
    }

    #[test]
    fn numbers_older_than_the_window_are_refused() {
        let mut window = ReplayWindow::default();
        window.mark(10);
        window.mark(10 + WINDOW);
        assert!(!window.is_new(10));
        assert!(!window.is_new(9));
        assert!(window.is_new(11));
        // A jump further than the window forgets everything below it.
        window.mark(10 + 5 * WINDOW);
        assert!(!window.is_new(10 + WINDOW));
        assert!(window.is_new(10 + 5 * WINDOW - 1));
    }
}
