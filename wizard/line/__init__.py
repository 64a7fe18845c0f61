"""Everything that speaks LINE: the client (outbound), the receiver (inbound), and what events do."""
