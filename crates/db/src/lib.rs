//! (Placeholder: the db role lands in a later commit.)
