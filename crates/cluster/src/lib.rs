//! (Placeholder: the cluster role lands in a later commit.)
