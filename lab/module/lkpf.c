// SPDX-License-Identifier: GPL-2.0
/*
 * lkpf: a minimal SR-IOV PF driver for QEMU's NVMe controller (1b36:0010).
 *
 * It does what NIC PF drivers do and the in-tree nvme driver does not: it
 * implements sriov_configure and disables SR-IOV in .remove(), so removing
 * or unbinding the PF removes its VFs under the PF's device_lock.  VFs bind
 * to it too and do nothing, except sleep in .remove() when asked to: the
 * sleep holds pci_rescan_remove_lock long enough for a second writer to
 * take the PF's device_lock, which makes the lab's races reproducible.
 */
#include <linux/delay.h>
#include <linux/module.h>
#include <linux/pci.h>

static unsigned int vf_remove_delay_ms;
module_param(vf_remove_delay_ms, uint, 0644);
MODULE_PARM_DESC(vf_remove_delay_ms, "Sleep this long in a VF's .remove() (race window)");

static unsigned int pf_remove_delay_ms;
module_param(pf_remove_delay_ms, uint, 0644);
MODULE_PARM_DESC(pf_remove_delay_ms, "Sleep this long in the PF's .remove() before disabling SR-IOV");

static int lkpf_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	dev_info(&pdev->dev, "lkpf: bound %s\n", pdev->is_virtfn ? "VF" : "PF");
	return 0;
}

static void lkpf_remove(struct pci_dev *pdev)
{
	if (pdev->is_virtfn) {
		msleep(READ_ONCE(vf_remove_delay_ms));
		dev_info(&pdev->dev, "lkpf: VF removed\n");
		return;
	}
	msleep(READ_ONCE(pf_remove_delay_ms));
	pci_disable_sriov(pdev);
	dev_info(&pdev->dev, "lkpf: PF removed\n");
}

static int lkpf_sriov_configure(struct pci_dev *pdev, int num_vfs)
{
	int err;

	if (!num_vfs) {
		pci_disable_sriov(pdev);
		return 0;
	}
	err = pci_enable_sriov(pdev, num_vfs);
	return err ? err : num_vfs;
}

static const struct pci_device_id lkpf_ids[] = {
	{ PCI_DEVICE(PCI_VENDOR_ID_REDHAT, 0x0010) },
	{ }
};
MODULE_DEVICE_TABLE(pci, lkpf_ids);

static struct pci_driver lkpf_driver = {
	.name = "lkpf",
	.id_table = lkpf_ids,
	.probe = lkpf_probe,
	.remove = lkpf_remove,
	.sriov_configure = lkpf_sriov_configure,
};
module_pci_driver(lkpf_driver);

MODULE_DESCRIPTION("SR-IOV PF driver for QEMU NVMe, for lktrace's lab");
MODULE_LICENSE("GPL");
