//! [`MemoryBuffer`] for the unified buffer and its mutable view, through their own methods.

use super::slice::BufferSliceMut;
use super::unified::UnifiedBuffer;
use crate::buffer_trait::MemoryBuffer;
use crate::element::Element;
use crate::error::Result;

impl<T: Element> MemoryBuffer<T> for UnifiedBuffer<T> {
    fn len(&self) -> usize {
        UnifiedBuffer::len(self)
    }

    fn copy_from(&mut self, src: &[T]) -> Result<()> {
        UnifiedBuffer::copy_from(self, src)
    }

    fn copy_to(&self, out: &mut [T]) -> Result<()> {
        UnifiedBuffer::copy_to(self, out)
    }

    fn as_slice(&self) -> Result<&[T]> {
        UnifiedBuffer::as_slice(self)
    }

    fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        UnifiedBuffer::as_mut_slice(self)
    }

    fn to_vec(&self) -> Result<Vec<T>> {
        UnifiedBuffer::to_vec(self)
    }

    fn fill(&mut self, value: T) -> Result<()> {
        UnifiedBuffer::fill(self, value)
    }
}

impl<T: Element> MemoryBuffer<T> for BufferSliceMut<'_, T> {
    fn len(&self) -> usize {
        BufferSliceMut::len(self)
    }

    fn copy_from(&mut self, src: &[T]) -> Result<()> {
        BufferSliceMut::copy_from(self, src)
    }

    fn copy_to(&self, out: &mut [T]) -> Result<()> {
        BufferSliceMut::copy_to(self, out)
    }

    fn as_slice(&self) -> Result<&[T]> {
        BufferSliceMut::as_slice(self)
    }

    fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        BufferSliceMut::as_mut_slice(self)
    }

    fn fill(&mut self, value: T) -> Result<()> {
        BufferSliceMut::fill(self, value)
    }
}
