//! [`flags!`]: the one shape of every flag set the formats carry — named constants, the
//! set of defined bits, and a checked constructor that refuses any other bit.

/// Defines a flag type over an unsigned integer: its named constants, `ALL` (every
/// defined bit), `from_bits` (refusing undefined bits), `bits`, `contains`,
/// `intersects` and `union`.
macro_rules! flags {
    (
        $(#[$doc:meta])*
        $ty:ident($int:ty) {
            $($(#[$fdoc:meta])* $name:ident = $value:expr,)*
        }
        all = $all:expr
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $ty($int);

        impl $ty {
            $($(#[$fdoc])* pub const $name: Self = Self($value);)*
            /// Every defined bit.
            pub const ALL: Self = Self($all);

            /// The value for `bits`, or `None` if an undefined bit is set.
            pub const fn from_bits(bits: $int) -> Option<Self> {
                if bits & !$all != 0 { None } else { Some(Self(bits)) }
            }

            /// The raw bits.
            pub const fn bits(self) -> $int {
                self.0
            }

            /// Whether every bit of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any bit of `other` is set in `self`.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// The bits of both.
            #[must_use]
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
        }
    };
}
