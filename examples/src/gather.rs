//! Planning gather writes: the bytes of a range held in many buffers (the
//! datagrams of a stream, in the receive buffers the NIC wrote), cut into
//! NVMe Write commands of whole blocks, each gathering at most a given
//! number of pieces (one SGL list page).
//!
//! Pure logic, so it is tested on its own: the receiver turns a [`Write`]
//! into `IoQueuePair::submit_write_gather`, and a [`Write::Copy`] (a block
//! made of more pieces than one command takes, which only tiny datagrams
//! cause) into one staged copy.

/// A piece of the range: a buffer, an offset in it, and a length.
pub type Piece<B> = (B, usize, usize);

/// One Write of whole blocks, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Write<B> {
    /// Gather these pieces, in order, into `blocks` blocks.
    Gather {
        pieces: Vec<Piece<B>>,
        blocks: usize,
    },
    /// One block whose bytes lie in more pieces than a command takes: copy
    /// them into one buffer and write that.
    Copy { pieces: Vec<Piece<B>> },
}

impl<B> Write<B> {
    /// Blocks the write covers.
    pub fn blocks(&self) -> usize {
        match self {
            Write::Gather { blocks, .. } => *blocks,
            Write::Copy { .. } => 1,
        }
    }
}

/// Cuts `pieces` (contiguous, in order, a whole number of `bs`-byte blocks
/// in all) into writes of whole blocks with at most `max_pieces` pieces
/// each. Consecutive parts of one buffer (`same` says which buffers are one)
/// stay one piece; a piece crossing the end of a write is split there.
///
/// # Panics
///
/// When the pieces do not add up to whole blocks, `bs` is 0 or `max_pieces`
/// is 0 (the caller's bug).
pub fn plan<B: Clone>(
    pieces: &[Piece<B>],
    bs: usize,
    max_pieces: usize,
    same: impl Fn(&B, &B) -> bool,
) -> Vec<Write<B>> {
    assert!(
        bs > 0 && max_pieces > 0,
        "block size and pieces per write above 0"
    );
    let total: usize = pieces.iter().map(|p| p.2).sum();
    assert!(
        total.is_multiple_of(bs),
        "{total} bytes are not whole {bs}-byte blocks"
    );
    let mut writes = Vec::new();
    let mut current: Vec<Piece<B>> = Vec::new();
    let mut blocks = 0;
    let mut next = Blocks::new(pieces, bs);
    while let Some(block) = next.block() {
        // The pieces the block adds: at most its parts, one fewer when the
        // first continues the write's last piece (an over-count when parts
        // continue each other only cuts a write early).
        let merges =
            matches!((current.last(), block.first()), (Some(l), Some(f)) if continues(l, f, &same));
        if current.len() + block.len() - usize::from(merges) <= max_pieces {
            for p in block {
                push(&mut current, p, &same);
            }
            blocks += 1;
            continue;
        }
        if !current.is_empty() {
            writes.push(Write::Gather {
                pieces: std::mem::take(&mut current),
                blocks,
            });
            blocks = 0;
        }
        let mut alone = Vec::new();
        for p in &block {
            push(&mut alone, p.clone(), &same);
        }
        if alone.len() <= max_pieces {
            (current, blocks) = (alone, 1);
        } else {
            writes.push(Write::Copy { pieces: alone });
        }
    }
    if !current.is_empty() {
        writes.push(Write::Gather {
            pieces: current,
            blocks,
        });
    }
    writes
}

/// Whether `next` continues `last` (the next bytes of the same buffer).
fn continues<B>(last: &Piece<B>, next: &Piece<B>, same: &impl Fn(&B, &B) -> bool) -> bool {
    same(&last.0, &next.0) && last.1 + last.2 == next.1
}

/// Appends `p`, merged into the last piece when it continues it.
fn push<B>(pieces: &mut Vec<Piece<B>>, p: Piece<B>, same: &impl Fn(&B, &B) -> bool) {
    match pieces.last_mut() {
        Some(last) if continues(last, &p, same) => last.2 += p.2,
        _ => pieces.push(p),
    }
}

/// The pieces, block by block.
struct Blocks<'a, B> {
    pieces: &'a [Piece<B>],
    bs: usize,
    /// The piece the next block starts in, and how far into it.
    index: usize,
    into: usize,
}

impl<'a, B: Clone> Blocks<'a, B> {
    fn new(pieces: &'a [Piece<B>], bs: usize) -> Self {
        Blocks {
            pieces,
            bs,
            index: 0,
            into: 0,
        }
    }

    /// The parts of pieces that make the next block.
    fn block(&mut self) -> Option<Vec<Piece<B>>> {
        let mut need = self.bs;
        let mut parts = Vec::new();
        while need > 0 {
            let (buf, at, len) = self.pieces.get(self.index)?;
            let n = (len - self.into).min(need);
            if n > 0 {
                parts.push((buf.clone(), at + self.into, n));
            }
            need -= n;
            self.into += n;
            if self.into == *len {
                (self.index, self.into) = (self.index + 1, 0);
            }
        }
        Some(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &u32, b: &u32) -> bool {
        a == b
    }

    /// The bytes a plan writes, as (buffer, offset) per byte, in order.
    fn bytes(writes: &[Write<u32>]) -> Vec<(u32, usize)> {
        writes
            .iter()
            .flat_map(|w| match w {
                Write::Gather { pieces, .. } | Write::Copy { pieces } => pieces.clone(),
            })
            .flat_map(|(b, at, len)| (at..at + len).map(move |i| (b, i)))
            .collect()
    }

    fn expand(pieces: &[Piece<u32>]) -> Vec<(u32, usize)> {
        bytes(&[Write::Copy {
            pieces: pieces.to_vec(),
        }])
    }

    #[test]
    fn datagrams_of_1456_bytes_make_one_write_when_they_fit() {
        // 64 KiB of 1,456-byte datagrams at offset 2 of their buffers, and
        // a last one that ends the range.
        let mut pieces: Vec<Piece<u32>> = (0..45).map(|i| (i, 2, 1456)).collect();
        pieces.push((45, 2, 65536 - 45 * 1456));
        let writes = plan(&pieces, 512, 256, same);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].blocks(), 128);
        assert_eq!(
            writes[0],
            Write::Gather {
                pieces: pieces.clone(),
                blocks: 128
            },
            "no piece split: parts of one datagram merge back"
        );
    }

    #[test]
    fn a_write_ends_at_a_block_boundary_when_pieces_run_out() {
        let pieces: Vec<Piece<u32>> = (0..10).map(|i| (i, 0, 300)).collect(); // 3000 bytes
        let pieces = [pieces, vec![(99, 0, 72)]].concat(); // 3072 = 6 blocks
        let writes = plan(&pieces, 512, 4, same);
        assert!(writes.iter().all(|w| match w {
            Write::Gather { pieces, blocks } =>
                pieces.len() <= 4 && pieces.iter().map(|p| p.2).sum::<usize>() == blocks * 512,
            Write::Copy { .. } => false,
        }));
        assert_eq!(writes.iter().map(Write::blocks).sum::<usize>(), 6);
        assert_eq!(bytes(&writes), expand(&pieces), "every byte once, in order");
    }

    #[test]
    fn a_block_of_more_pieces_than_a_write_takes_is_copied() {
        // 512 one-byte datagrams, then a whole block from one buffer.
        let mut pieces: Vec<Piece<u32>> = (0..512).map(|i| (i, 7, 1)).collect();
        pieces.push((1000, 0, 512));
        let writes = plan(&pieces, 512, 256, same);
        assert!(matches!(&writes[0], Write::Copy { pieces } if pieces.len() == 512));
        assert_eq!(
            writes[1],
            Write::Gather {
                pieces: vec![(1000, 0, 512)],
                blocks: 1
            }
        );
        assert_eq!(bytes(&writes), expand(&pieces));
    }

    #[test]
    fn every_byte_is_written_once_in_order_for_any_cut() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..200 {
            let mut pieces = Vec::new();
            let mut total = 0;
            let blocks = 1 + round % 17;
            while total < blocks * 512 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let len = (1 + (x % 1500) as usize).min(blocks * 512 - total);
                pieces.push(((x >> 32) as u32 % 5, (x >> 40) as usize % 64, len));
                total += len;
            }
            let max = 1 + round % 9;
            let writes = plan(&pieces, 512, max, same);
            assert_eq!(bytes(&writes), expand(&pieces), "round {round}");
            for w in &writes {
                if let Write::Gather { pieces, blocks } = w {
                    assert!(pieces.len() <= max, "round {round}");
                    assert_eq!(pieces.iter().map(|p| p.2).sum::<usize>(), blocks * 512);
                }
            }
            assert_eq!(writes.iter().map(Write::blocks).sum::<usize>(), blocks);
        }
    }

    #[test]
    #[should_panic(expected = "not whole")]
    fn pieces_that_do_not_make_whole_blocks_are_a_bug() {
        plan(&[(0u32, 0, 100)], 512, 4, same);
    }
}
