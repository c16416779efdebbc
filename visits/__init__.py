"""Care visits (探访关爱): visit plans per region, visits recorded by SMS, device and operator,
major changes, and the monthly visit rate (issue 18)."""
