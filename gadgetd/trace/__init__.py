"""`gadgetd trace`: who opens ep0/epN, with which flags, what the open returned and how long it
took, and how long each ep0 read/write held on; kprobe events through tracefs, nothing else."""
