//! Physical Region Page entries (base spec section 4.1.1): how a transfer of
//! `len` bytes at an IOVA is described to the controller.

use crate::spec::PAGE_SIZE;

/// Entries one PRP list page holds; this driver uses one list page per command.
pub const LIST_ENTRIES: usize = PAGE_SIZE / 8;

/// The largest transfer one command can describe with one PRP list page.
pub const MAX_TRANSFER: usize = LIST_ENTRIES * PAGE_SIZE;

/// How PRP2 is used for a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prp2 {
    /// The transfer fits in the page PRP1 points into.
    None,
    /// The transfer spans exactly two pages: PRP2 is the second.
    Page(u64),
    /// PRP2 points at a list of `count` page addresses starting with `first`,
    /// each the next page in IOVA space.
    List { first: u64, count: usize },
}

/// PRP1 and what PRP2 must be for `len` (> 0) bytes at `iova`.
pub fn plan(iova: u64, len: usize) -> (u64, Prp2) {
    let in_first = PAGE_SIZE - (iova as usize % PAGE_SIZE);
    if len <= in_first {
        return (iova, Prp2::None);
    }
    let next = iova + in_first as u64;
    let rest = len - in_first;
    if rest <= PAGE_SIZE {
        return (iova, Prp2::Page(next));
    }
    (
        iova,
        Prp2::List {
            first: next,
            count: rest.div_ceil(PAGE_SIZE),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page() {
        assert_eq!(plan(0x10_0000, 4096), (0x10_0000, Prp2::None));
        assert_eq!(plan(0x10_0200, 512), (0x10_0200, Prp2::None));
        assert_eq!(plan(0x10_0e00, 512), (0x10_0e00, Prp2::None));
    }

    #[test]
    fn two_pages() {
        assert_eq!(plan(0x10_0000, 8192), (0x10_0000, Prp2::Page(0x10_1000)));
        assert_eq!(
            plan(0x10_0e00, 1024),
            (0x10_0e00, Prp2::Page(0x10_1000)),
            "a 1 KiB read crossing a page"
        );
    }

    #[test]
    fn lists() {
        assert_eq!(
            plan(0x10_0000, 12288),
            (
                0x10_0000,
                Prp2::List {
                    first: 0x10_1000,
                    count: 2
                }
            )
        );
        assert_eq!(
            plan(0x10_0800, 12288),
            (
                0x10_0800,
                Prp2::List {
                    first: 0x10_1000,
                    count: 3
                }
            )
        );
        let (_, p) = plan(0x10_0000, MAX_TRANSFER);
        assert_eq!(
            p,
            Prp2::List {
                first: 0x10_1000,
                count: LIST_ENTRIES - 1
            }
        );
    }
}
