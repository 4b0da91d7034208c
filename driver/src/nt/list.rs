//! A singly linked list whose nodes are pool allocations of their own: the driver's
//! collections of outstanding requests and waiters grow with the load, one fallible
//! allocation per element, instead of living in fixed driver-wide tables.
//!
//! A node's value never moves while it is linked (the node is its own allocation), so a
//! kernel object inside it (an event, an IO_CSQ_IRP_CONTEXT) may be handed to the kernel
//! for as long as the node is in the list. Lists are reached under their owner's lock;
//! nothing here waits or does I/O.

use super::pool::PoolBox;

/// One element.
pub(crate) struct Node<T> {
    pub(crate) value: T,
    next: Option<PoolBox<Node<T>>>,
}

/// A list of pool nodes.
pub(crate) struct List<T> {
    head: Option<PoolBox<Node<T>>>,
}

impl<T> Node<T> {
    /// A node for `value` in non-paged pool with `tag`, or `None` when pool is exhausted.
    /// Callable at IRQL <= DISPATCH_LEVEL.
    pub(crate) fn new(value: T, tag: u32) -> Option<PoolBox<Self>> {
        PoolBox::try_new(Self { value, next: None }, tag)
    }
}

impl<T> List<T> {
    pub(crate) const fn new() -> Self {
        Self { head: None }
    }

    /// Links `node` first.
    pub(crate) fn push(&mut self, mut node: PoolBox<Node<T>>) {
        node.next = self.head.take();
        self.head = Some(node);
    }

    pub(crate) fn iter(&self) -> Iter<'_, T> {
        Iter(self.head.as_deref())
    }

    pub(crate) fn iter_mut(&mut self) -> IterMut<'_, T> {
        IterMut(self.head.as_deref_mut())
    }

    /// Unlinks and returns the first node whose value `pred` accepts.
    pub(crate) fn take_first(
        &mut self,
        mut pred: impl FnMut(&mut T) -> bool,
    ) -> Option<PoolBox<Node<T>>> {
        let mut cursor = &mut self.head;
        while cursor.as_mut().is_some_and(|n| !pred(&mut n.value)) {
            cursor = &mut cursor.as_mut()?.next;
        }
        let mut taken = cursor.take()?;
        *cursor = taken.next.take();
        Some(taken)
    }
}

impl<T> Drop for List<T> {
    fn drop(&mut self) {
        // One node at a time: a recursive drop of a long list would overflow the small
        // kernel stack.
        let mut next = self.head.take();
        while let Some(mut node) = next {
            next = node.next.take();
        }
    }
}

pub(crate) struct Iter<'a, T>(Option<&'a Node<T>>);

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;
    fn next(&mut self) -> Option<&'a T> {
        let node = self.0?;
        self.0 = node.next.as_deref();
        Some(&node.value)
    }
}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Self(self.0)
    }
}

pub(crate) struct IterMut<'a, T>(Option<&'a mut Node<T>>);

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = &'a mut T;
    fn next(&mut self) -> Option<&'a mut T> {
        let node = self.0.take()?;
        self.0 = node.next.as_deref_mut();
        Some(&mut node.value)
    }
}
