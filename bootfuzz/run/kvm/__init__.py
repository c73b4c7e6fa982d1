"""Our own minimal KVM VMM: runs a BootPlan on /dev/kvm (backend ``kvm``)."""
