"""Reading and steering hidden states inside a decoder, shared by the locate-then-edit methods."""
