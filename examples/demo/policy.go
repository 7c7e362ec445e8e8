package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"
)

// canaryRequests is how many requests show the 90/10 split.
const canaryRequests = 40

// stepCanary applies the inventory canary route with meshctl, waits until
// every sidecar runs the new configuration, and shows its effect.
func (d *demo) stepCanary(ctx context.Context, m *mesh) error {
	fmt.Println("a policy: 90% of calls to inventory go to the stable instances, 10% to inventory-canary,")
	fmt.Println("   and a caller sending 'x-canary: always' gets the canary (orders-1 forwards that header)")
	before, err := controlPlaneVersion(m.orders.admin)
	if err != nil {
		return err
	}
	file := filepath.Join(d.policies, "inventory-canary.yaml")
	applied := time.Now()
	if err := d.meshctl(ctx, "apply", "-f", file); err != nil {
		return err
	}
	if err := d.meshctl(ctx, "get", "httproutes"); err != nil {
		return err
	}
	versions, err := waitConfigApplied(ctx, m, before)
	if err != nil {
		return err
	}
	fmt.Printf("   every sidecar applied configuration %s %v after the apply (curl http://ADMIN/config_dump):\n",
		versions["web-1"], time.Since(applied).Round(time.Millisecond))
	for _, node := range sortedKeys(versions) {
		fmt.Printf("     %-19s control_plane.version %s\n", node, versions[node])
	}

	opted := map[string]int{}
	for range 4 {
		r, body, err := getStock(ctx, m, map[string]string{"x-canary": "always"})
		if err != nil {
			return err
		}
		if r.status != http.StatusOK {
			return fmt.Errorf("GET /orders/widget with x-canary: %d %s", r.status, r.body)
		}
		opted[body.InventoryInstance]++
	}
	fmt.Printf("   4 requests with x-canary: always   served by %s\n", sortedCounts(opted))
	fmt.Printf("     (curl -H 'Host: orders' -H 'x-canary: always' http://%s/orders/widget)\n", m.web.outbound)

	split, canary := map[string]int{}, 0
	for range canaryRequests {
		r, body, err := getStock(ctx, m, nil)
		if err != nil {
			return err
		}
		if r.status != http.StatusOK {
			return fmt.Errorf("GET /orders/widget: %d %s", r.status, r.body)
		}
		split[body.InventoryInstance]++
		if body.InventoryInstance == "inventory-canary-1" {
			canary++
		}
	}
	fmt.Printf("   %d requests without it          served by %s\n", canaryRequests, sortedCounts(split))
	fmt.Printf("     (the canary got %d of %d; each request is drawn at random by weight, so expect about %d)\n",
		canary, canaryRequests, canaryRequests/10)
	return nil
}

// distinct returns the set of values of m.
func distinct(m map[string]string) map[string]bool {
	set := map[string]bool{}
	for _, v := range m {
		set[v] = true
	}
	return set
}
