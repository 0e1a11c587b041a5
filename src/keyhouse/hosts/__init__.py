"""Engine hosts: machines running ``keyhouse agent`` for the control plane."""
