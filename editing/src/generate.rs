//! Seeded generated editing sessions, shaped like the real traces: someone typing words at a
//! cursor one character per edit, backspacing runs of typos, jumping elsewhere in the text,
//! deleting a selection, pasting a paragraph. Only ASCII, so code-point positions equal the
//! byte offsets yrs uses.
//!
//! [`concurrent`] has several such typists, each on its own replica (yrs documents with client
//! ids `agent + 1`, as a replay would use), who now and then merge another's replica into their
//! own before their next edit; the transactions record that in `parents` as the real
//! concurrent traces do, and `end_content` is every replica merged.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

use crate::{EditTrace, EditTxn, Patch};

/// Words the typists type.
const WORDS: &[&str] = &[
    "the",
    "relay",
    "keeps",
    "every",
    "document",
    "in",
    "sync",
    "while",
    "people",
    "type",
    "a",
    "paragraph",
    "about",
    "their",
    "week",
    "and",
    "merge",
    "edits",
    "made",
    "offline",
    "of",
    "text",
    "with",
    "small",
    "changes",
    "to",
    "each",
    "line",
    "we",
    "should",
    "write",
    "more",
    "tests",
    "before",
    "release",
    "notes",
    "for",
    "users",
    "who",
    "edit",
    "together",
    "on",
    "one",
    "page",
    "that",
    "is",
    "shared",
    "by",
    "many",
    "clients",
];

/// A person at a keyboard: where their cursor is and what they are in the middle of.
#[derive(Debug)]
struct Typist {
    /// Cursor position, in characters.
    cursor: u32,
    /// Characters of the word being typed that are still to come.
    word: Vec<u8>,
    /// Backspaces still to press.
    backspaces: u32,
}

impl Typist {
    fn new() -> Typist {
        Typist {
            cursor: 0,
            word: Vec::new(),
            backspaces: 0,
        }
    }

    /// The next edit on a text of `len` characters (the typist's cursor may have been pushed
    /// past the end by someone else's deletions, so it is clamped first).
    fn next_edit(&mut self, rng: &mut ChaCha8Rng, len: u32) -> Patch {
        self.cursor = self.cursor.min(len);
        if self.backspaces > 0 && self.cursor > 0 {
            self.backspaces -= 1;
            self.cursor -= 1;
            return (self.cursor, 1, String::new());
        }
        self.backspaces = 0;
        let roll = rng.random_range(0..1000);
        if roll < 20 && len > 0 {
            // Jump somewhere else, then type there.
            self.cursor = rng.random_range(0..=len);
            self.word.clear();
        } else if roll < 70 && self.cursor > 0 {
            // A typo noticed: backspace a few characters.
            self.backspaces = rng.random_range(1..=8u32).min(self.cursor) - 1;
            self.cursor -= 1;
            return (self.cursor, 1, String::new());
        } else if roll < 80 && len > 2 {
            // Select a range and delete it.
            let at = rng.random_range(0..len - 1);
            let n = rng.random_range(1..=40u32).min(len - at);
            self.cursor = at;
            self.word.clear();
            return (at, n, String::new());
        } else if roll < 84 {
            // Paste a few sentences.
            let count = rng.random_range(1..=4);
            let text = sentences(rng, count);
            let at = self.cursor;
            self.cursor += ascii_len(&text);
            return (at, 0, text);
        }
        let c = self.next_char(rng);
        let at = self.cursor;
        self.cursor += 1;
        (at, 0, char::from(c).to_string())
    }

    /// The next character typed: the rest of the current word, then a separator.
    fn next_char(&mut self, rng: &mut ChaCha8Rng) -> u8 {
        if self.word.is_empty() {
            let word = WORDS[rng.random_range(0..WORDS.len())];
            self.word = word.bytes().rev().collect();
            return match rng.random_range(0..20) {
                0 => b'\n',
                1 | 2 => b'.',
                _ => b' ',
            };
        }
        self.word.pop().unwrap_or(b' ')
    }
}

/// `count` sentences of random words.
fn sentences(rng: &mut ChaCha8Rng, count: usize) -> String {
    let mut out = String::new();
    for _ in 0..count {
        for i in 0..rng.random_range(4..14) {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        }
        out.push_str(". ");
    }
    out
}

fn ascii_len(s: &str) -> u32 {
    u32::try_from(s.len()).expect("generated pastes are a few hundred bytes")
}

/// One typist making `edits` edits (one patch per transaction), starting from an empty text.
pub fn sequential(seed: u64, edits: usize) -> EditTrace {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut typist = Typist::new();
    let mut text: Vec<u8> = Vec::new();
    let mut txns = Vec::with_capacity(edits);
    for _ in 0..edits {
        let len = u32::try_from(text.len()).expect("a generated text stays far below 4 GiB");
        let (at, deleted, inserted) = typist.next_edit(&mut rng, len);
        // Moves the tail with memcpy, not byte by byte as `splice` does in debug builds.
        let start = at as usize;
        let tail = text.split_off(start);
        text.extend_from_slice(inserted.as_bytes());
        text.extend_from_slice(&tail[deleted as usize..]);
        txns.push(EditTxn {
            parents: Vec::new(),
            agent: 0,
            patches: vec![(at, deleted, inserted)],
        });
    }
    EditTrace {
        start_content: String::new(),
        end_content: String::from_utf8(text).expect("the typists type ASCII"),
        num_agents: 1,
        txns,
    }
}

/// `agents` typists making `txns` transactions between them, each on its own replica. The
/// one typing changes every few dozen edits; before an edit, a typist merges another's
/// replica one time in ten, so replicas spend long stretches apart.
pub fn concurrent(seed: u64, agents: usize, txns: usize) -> EditTrace {
    let agents = agents.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let docs: Vec<Doc> = (0..agents)
        .map(|agent| Doc::with_client_id(agent as u64 + 1))
        .collect();
    let mut typists: Vec<Typist> = (0..agents).map(|_| Typist::new()).collect();
    let mut last: Vec<Option<usize>> = vec![None; agents];
    let mut out = Vec::with_capacity(txns);
    let mut agent = 0;
    for i in 0..txns {
        if rng.random_range(0..30) == 0 {
            agent = rng.random_range(0..agents);
        }
        let mut parents: Vec<usize> = last[agent].into_iter().collect();
        if agents > 1 && rng.random_range(0..10) == 0 {
            let other = (agent + rng.random_range(1..agents)) % agents;
            if let Some(j) = last[other] {
                merge_into(&docs[agent], &docs[other]);
                parents.push(j);
            }
        }
        let doc = &docs[agent];
        let text = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        let patch = typists[agent].next_edit(&mut rng, text.len(&txn));
        let (at, deleted, inserted) = &patch;
        if *deleted > 0 {
            text.remove_range(&mut txn, *at, *deleted);
        }
        if !inserted.is_empty() {
            text.insert(&mut txn, *at, inserted);
        }
        drop(txn);
        out.push(EditTxn {
            parents,
            agent,
            patches: vec![patch],
        });
        last[agent] = Some(i);
    }
    let all = Doc::new();
    for doc in &docs {
        merge_into(&all, doc);
    }
    let end_content = all.get_or_insert_text("text").get_string(&all.transact());
    EditTrace {
        start_content: String::new(),
        end_content,
        num_agents: agents,
        txns: out,
    }
}

/// Applies to `to` whatever `from` has that `to` lacks.
fn merge_into(to: &Doc, from: &Doc) {
    let missing = from
        .transact()
        .encode_state_as_update_v1(&to.transact().state_vector());
    let update = Update::decode_v1(&missing).expect("yrs decodes the update it just encoded");
    to.transact_mut()
        .apply_update(update)
        .expect("an update between replicas of one session applies");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use yrs::StateVector as Sv;

    /// Replays a trace the way the SDK's trace test does: each agent catches up with the
    /// transactions its `parents` name (and their ancestors), then applies its patches.
    fn replay(trace: &EditTrace) -> Vec<Doc> {
        let docs: Vec<Doc> = (0..trace.num_agents)
            .map(|a| Doc::with_client_id(a as u64 + 1))
            .collect();
        let mut known = vec![vec![false; trace.txns.len()]; trace.num_agents];
        let mut updates: Vec<Vec<u8>> = Vec::new();
        for (i, t) in trace.txns.iter().enumerate() {
            let mut stack = t.parents.clone();
            let mut missing = Vec::new();
            while let Some(p) = stack.pop() {
                if !known[t.agent][p] {
                    known[t.agent][p] = true;
                    missing.push(p);
                    stack.extend(&trace.txns[p].parents);
                }
            }
            missing.sort_unstable();
            let doc = &docs[t.agent];
            for p in missing {
                let u = Update::decode_v1(&updates[p]).unwrap();
                doc.transact_mut().apply_update(u).unwrap();
            }
            let text = doc.get_or_insert_text("text");
            let mut txn = doc.transact_mut();
            for (at, deleted, inserted) in &t.patches {
                if *deleted > 0 {
                    text.remove_range(&mut txn, *at, *deleted);
                }
                if !inserted.is_empty() {
                    text.insert(&mut txn, *at, inserted);
                }
            }
            updates.push(txn.encode_update_v1());
            known[t.agent][i] = true;
        }
        docs
    }

    #[test]
    fn a_sequential_session_replays_to_its_end_content_and_looks_like_typing() {
        let trace = sequential(11, 20_000);
        let docs = replay(&EditTrace {
            num_agents: 1,
            txns: trace
                .txns
                .iter()
                .enumerate()
                .map(|(i, t)| EditTxn {
                    parents: i.checked_sub(1).into_iter().collect(),
                    ..t.clone()
                })
                .collect(),
            ..trace.clone()
        });
        let text = docs[0].get_or_insert_text("text");
        assert_eq!(text.get_string(&docs[0].transact()), trace.end_content);
        assert!(trace.end_content.is_ascii());
        let deletes = trace.txns.iter().filter(|t| t.patches[0].1 > 0).count();
        let single_char_inserts = trace
            .txns
            .iter()
            .filter(|t| t.patches[0].2.len() == 1)
            .count();
        // Mostly typing, with a real share of deletions, as in the real traces.
        assert!(single_char_inserts > trace.txns.len() / 2);
        assert!(deletes > trace.txns.len() / 20);
        assert!(trace.end_content.len() > 5_000);
    }

    #[test]
    fn the_same_seed_gives_the_same_session_and_another_seed_another() {
        assert_eq!(sequential(5, 2_000), sequential(5, 2_000));
        assert_ne!(sequential(5, 2_000), sequential(6, 2_000));
        assert_eq!(concurrent(5, 3, 1_000), concurrent(5, 3, 1_000));
    }

    #[test]
    fn a_concurrent_session_replays_to_its_end_content_once_merged() {
        let trace = concurrent(9, 3, 3_000);
        let merges = trace.txns.iter().filter(|t| t.parents.len() > 1).count();
        assert!(merges > 50, "{merges}");
        let docs = replay(&trace);
        let all = Doc::new();
        for doc in &docs {
            let u = doc.transact().encode_state_as_update_v1(&Sv::default());
            all.transact_mut()
                .apply_update(Update::decode_v1(&u).unwrap())
                .unwrap();
        }
        let text = all.get_or_insert_text("text");
        assert_eq!(text.get_string(&all.transact()), trace.end_content);
    }
}
