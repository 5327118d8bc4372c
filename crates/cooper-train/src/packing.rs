//! Token-budget packing: samples are concatenated into packs of roughly `expected_num_tokens`
//! tokens and never more than `max_num_tokens`, as the official `PackedDataset` does:
//!
//! * a sample longer than `max_num_tokens_per_sample` is skipped (and counted);
//! * a sample that would overflow the current pack waits in a buffer (up to `max_buffer_size`
//!   samples); once the buffer is full, or the sample came from the buffer, the current pack is
//!   emitted instead;
//! * while the pack holds fewer than `prefer_buffer_before` tokens, buffered samples are taken
//!   before new ones;
//! * a pack is emitted as soon as it reaches `expected_num_tokens`.
//!
//! When the input ends, what remains (pack and buffer) is emitted in packs that respect
//! `max_num_tokens`. The token count of a sample is whatever the caller's `count` closure says
//! (the official count adds two marker tokens per split of the sample's plan).

use std::collections::VecDeque;

use crate::config::DataConfig;
use crate::error::{Result, TrainError};

/// Packing limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackingConfig {
    /// Emit a pack once it holds at least this many tokens.
    pub expected_num_tokens: usize,
    /// A pack never holds more.
    pub max_num_tokens: usize,
    /// Longer samples are skipped.
    pub max_num_tokens_per_sample: usize,
    /// Samples that may wait for a later pack.
    pub max_buffer_size: usize,
    /// Buffered samples are preferred while the pack is below this many tokens.
    pub prefer_buffer_before: usize,
}

impl PackingConfig {
    /// From the run config, with the official buffer settings (50 samples, 16384 tokens).
    pub fn from_config(data: &DataConfig) -> Result<Self> {
        let config = Self {
            expected_num_tokens: data.expected_num_tokens,
            max_num_tokens: data.max_num_tokens,
            max_num_tokens_per_sample: data.max_num_tokens_per_sample,
            max_buffer_size: 50,
            prefer_buffer_before: 16_384,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.max_num_tokens == 0 || self.expected_num_tokens > self.max_num_tokens {
            return Err(TrainError::Config(format!(
                "packing needs 0 < expected_num_tokens ({}) ≤ max_num_tokens ({})",
                self.expected_num_tokens, self.max_num_tokens
            )));
        }
        Ok(())
    }
}

/// One pack of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Pack<T> {
    /// The samples, in packing order.
    pub samples: Vec<T>,
    /// Their token count.
    pub num_tokens: usize,
}

/// An iterator of packs over an iterator of samples.
pub struct Packer<T, I, F> {
    input: I,
    count: F,
    config: PackingConfig,
    buffer: VecDeque<(T, usize)>,
    current: Pack<T>,
    skipped: usize,
    exhausted: bool,
}

impl<T, I, F> Packer<T, I, F>
where
    I: Iterator<Item = T>,
    F: FnMut(&T) -> usize,
{
    /// Packs `input`, measuring each sample with `count`.
    pub fn new(input: I, count: F, config: PackingConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            input,
            count,
            config,
            buffer: VecDeque::new(),
            current: Pack {
                samples: Vec::new(),
                num_tokens: 0,
            },
            skipped: 0,
            exhausted: false,
        })
    }

    /// Samples skipped so far for being too long.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn take_current(&mut self) -> Pack<T> {
        std::mem::replace(
            &mut self.current,
            Pack {
                samples: Vec::new(),
                num_tokens: 0,
            },
        )
    }

    fn push(&mut self, sample: T, tokens: usize) {
        self.current.samples.push(sample);
        self.current.num_tokens += tokens;
    }

    /// After the input ends: emit the current pack, then pack the buffer.
    fn drain(&mut self) -> Option<Pack<T>> {
        while let Some((sample, tokens)) = self.buffer.pop_front() {
            if self.current.num_tokens + tokens > self.config.max_num_tokens
                && !self.current.samples.is_empty()
            {
                self.buffer.push_front((sample, tokens));
                return Some(self.take_current());
            }
            self.push(sample, tokens);
        }
        (!self.current.samples.is_empty()).then(|| self.take_current())
    }
}

impl<T, I, F> Iterator for Packer<T, I, F>
where
    I: Iterator<Item = T>,
    F: FnMut(&T) -> usize,
{
    type Item = Pack<T>;

    fn next(&mut self) -> Option<Pack<T>> {
        if self.exhausted {
            return self.drain();
        }
        loop {
            let from_buffer = self.current.num_tokens < self.config.prefer_buffer_before
                && !self.buffer.is_empty();
            let (sample, tokens) = if from_buffer {
                self.buffer.pop_front()?
            } else {
                match self.input.next() {
                    Some(sample) => {
                        let tokens = (self.count)(&sample);
                        (sample, tokens)
                    }
                    None => {
                        self.exhausted = true;
                        return self.drain();
                    }
                }
            };
            if tokens > self.config.max_num_tokens_per_sample || tokens > self.config.max_num_tokens
            {
                self.skipped += 1;
                continue;
            }
            if self.current.num_tokens + tokens > self.config.max_num_tokens {
                if self.buffer.len() < self.config.max_buffer_size && !from_buffer {
                    self.buffer.push_back((sample, tokens));
                    continue;
                }
                // Emit the current pack; the sample waits at the front of the buffer. (The
                // official loop drops it here; keeping it loses no data.)
                self.buffer.push_front((sample, tokens));
                return Some(self.take_current());
            }
            self.push(sample, tokens);
            if self.current.num_tokens >= self.config.expected_num_tokens {
                return Some(self.take_current());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PackingConfig {
        PackingConfig {
            expected_num_tokens: 8,
            max_num_tokens: 10,
            max_num_tokens_per_sample: 6,
            max_buffer_size: 2,
            prefer_buffer_before: 4,
        }
    }

    fn lengths(packs: &[Pack<usize>]) -> Vec<Vec<usize>> {
        packs.iter().map(|p| p.samples.clone()).collect()
    }

    #[test]
    fn packs_follow_the_budget() {
        // Samples are their own lengths. Trace:
        // 5 → [5]; 2 → [5,2]=7; 4: 11 > 10 → buffered; 1 → [5,2,1]=8 ≥ 8 → emit.
        // New pack (0 < 4, buffer [4]) → [4]; 4 ≥ 4 so new input: 6 → [4,6]=10 → emit.
        // 7 > 6 → skipped. 3 → [3]; end: emit [3].
        let input = vec![5usize, 2, 4, 1, 6, 7, 3];
        let mut packer = Packer::new(input.into_iter(), |&n| n, config()).unwrap();
        let packs: Vec<_> = packer.by_ref().collect();
        assert_eq!(lengths(&packs), vec![vec![5, 2, 1], vec![4, 6], vec![3]]);
        assert_eq!(
            packs.iter().map(|p| p.num_tokens).collect::<Vec<_>>(),
            vec![8, 10, 3]
        );
        assert_eq!(packer.skipped(), 1);
    }

    #[test]
    fn full_buffer_forces_a_pack_out() {
        // 6 → [6]; 6: 12 > 10 → buffer [6]; 6 → buffer [6,6]; 6: buffer full → emit [6], the
        // sample waits in front (buffer [6,6,6]). Next: 0 < 4 → take a buffered 6 → [6]; 6 ≥ 4
        // → new input 1 → [6,1]=7; input ends: drain, 7 + 6 > 10 → emit [6,1]; then [6] and
        // 6 + 6 > 10 → emit [6]; then the last [6].
        let input = vec![6usize, 6, 6, 6, 1];
        let packs: Vec<_> = Packer::new(input.into_iter(), |&n| n, config())
            .unwrap()
            .collect();
        let all: usize = packs.iter().map(|p| p.num_tokens).sum();
        assert_eq!(all, 25);
        assert!(packs.iter().all(|p| p.num_tokens <= 10));
        assert_eq!(lengths(&packs), vec![vec![6], vec![6, 1], vec![6], vec![6]]);
    }

    #[test]
    fn invalid_limits_are_rejected() {
        let bad = PackingConfig {
            expected_num_tokens: 11,
            ..config()
        };
        assert!(Packer::new(std::iter::empty::<usize>(), |&n| n, bad).is_err());
        let empty: Vec<Pack<usize>> = Packer::new(std::iter::empty(), |&n| n, config())
            .unwrap()
            .collect();
        assert!(empty.is_empty());
    }
}
