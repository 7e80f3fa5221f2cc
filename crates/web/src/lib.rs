//! (Placeholder: the web role lands in a later commit.)
