//! (Placeholder: the lb role lands in a later commit.)
