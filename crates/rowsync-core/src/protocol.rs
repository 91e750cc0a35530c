//! Whether two sides of a `/v1` exchange can talk: each states the protocol
//! versions it speaks ([`Protocols`]), and they talk in the newest version
//! both speak. With none in common, the side that notices refuses and says
//! which of the two to upgrade: the older one.

use rowsync_proto::Protocols;

/// Why two sides cannot talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The other side speaks only versions older than ours: upgrade it.
    TheyAreOlder,
    /// The other side speaks only versions newer than ours: upgrade us.
    TheyAreNewer,
}

/// The newest version both `ours` and `theirs` speak.
pub fn agree(ours: Protocols, theirs: Protocols) -> Result<u32, Mismatch> {
    if theirs.newest < ours.oldest {
        Err(Mismatch::TheyAreOlder)
    } else if theirs.oldest > ours.newest {
        Err(Mismatch::TheyAreNewer)
    } else {
        Ok(ours.newest.min(theirs.newest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaks(s: &str) -> Protocols {
        s.parse().unwrap()
    }

    #[test]
    fn the_newest_version_in_common_is_spoken() {
        assert_eq!(agree(speaks("1-3"), speaks("2-5")), Ok(3));
        assert_eq!(agree(speaks("2-5"), speaks("1-3")), Ok(3));
        assert_eq!(agree(speaks("1"), speaks("1")), Ok(1));
        assert_eq!(agree(speaks("1-3"), speaks("3")), Ok(3));
    }

    #[test]
    fn without_a_version_in_common_the_older_side_is_named() {
        assert_eq!(agree(speaks("2-3"), speaks("1")), Err(Mismatch::TheyAreOlder));
        assert_eq!(agree(speaks("1"), speaks("2-3")), Err(Mismatch::TheyAreNewer));
    }

    #[test]
    fn the_wire_form_reads_back_and_nonsense_is_refused() {
        for text in ["1", "2-7"] {
            assert_eq!(speaks(text).to_string(), text);
        }
        assert_eq!(speaks(" 2 - 3 "), Protocols { oldest: 2, newest: 3 });
        for bad in ["", "x", "3-2", "1-", "-1", "1-2-3", "-5"] {
            assert!(bad.parse::<Protocols>().is_err(), "{bad:?} was read");
        }
    }
}
