//! Black-box tests of the emoknow binary.
