//! (Placeholder: the app role lands in a later commit.)
