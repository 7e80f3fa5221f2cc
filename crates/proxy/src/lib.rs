//! (Placeholder: the forwarding core lands in a later commit.)
