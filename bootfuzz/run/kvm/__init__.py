"""Our own minimal KVM VMM: runs a BootPlan on /dev/kvm (backend ``kvm``).

The process entry point is ``python -m bootfuzz.cli.vmm``; ``vmm`` holds the run loop,
``vm``/``cpu``/``devices`` the ioctls, register state and PC devices.
"""
