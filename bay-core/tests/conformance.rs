//! The driver conformance suite (`bay_core::testing::conformance`) against the `FakeDriver`,
//! so that the fake every other bay-core test relies on keeps the contract the engines keep.

use bay_core::testing::conformance::fake;

bay_core::conformance_tests!(fake_driver => fake());
